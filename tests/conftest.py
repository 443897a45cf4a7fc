"""Fixtures shared by the whole suite live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.simulator",
    "tests.fixtures.influx_servers",
    "tests.fixtures.service_process",
]
