"""The README's first command: `demo` runs the service on its embedded defaults, nothing else."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.fixtures.processes import PYTHON, ManagedProcess, clean_env, free_port, port_open


def test_demo_serves_readings_from_the_built_in_gateway_and_stops_with_it(
    process_factory: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    port = free_port()
    demo = process_factory(
        "demo",
        [PYTHON, "-m", "powerwall_service.cli", "demo", "--port", str(port)],
        env=clean_env(POWERWALL_ENV_FILE=""),
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"

    def has_reading() -> bool:
        try:
            return httpx.get(f"{base}/snapshot", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    demo.wait_until(has_reading, timeout=60)
    reading = httpx.get(f"{base}/snapshot").json()["reading"]
    assert {"battery_percentage", "site_power_w", "load_power_w", "string_f_voltage_v"} <= reading[
        "fields"
    ].keys()
    assert reading["site"] == "Simulated Home"
    assert reading["units"], "each Powerwall's own values"
    assert httpx.get(f"{base}/health").status_code == 200
    assert (tmp_path / "data" / "store.db").exists()
    found = re.search(r"simulated gateway on https://127\.0\.0\.1:(\d+)", demo.log())
    assert found, demo.log()
    gateway_port = int(found.group(1))
    assert port_open(gateway_port)

    demo.stop()
    assert not port_open(port)
    assert not port_open(gateway_port), "the simulated gateway stops with the demo"
