"""`powerwall-influx poll` as a user runs it: a real process, configured by environment variables.

Against a frozen simulator, the printed JSON must carry every metric the mode serves, each with
the simulator's true value, and the number of requests the poll sent, which must be what the
simulator counted. A gateway that cannot be read gives exit 1 and one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.influx_servers import InfluxServer
from tests.fixtures.processes import clean_env, free_port
from tests.fixtures.simulator import Simulator

POWERS = ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w")
COUNTERS = (
    "site_energy_imported_wh",
    "site_energy_exported_wh",
    "solar_energy_exported_wh",
    "battery_energy_imported_wh",
    "battery_energy_exported_wh",
    "load_energy_imported_wh",
)
FULL_READ_BOUND = {"local": 11, "tedapi": 12}
"""A first poll reads everything once: the refused request and login, the core, identity and
every slower read (local pw3 adds one probe of /api/devices/vitals, which answers 404)."""


def run_poll(sim: Simulator, mode: str, tmp_path: Path, *args: str, **extra_env: str) -> tuple[int, str, str]:
    env = clean_env(
        PW_HOST=sim.host,
        DATA_DIR=str(tmp_path / "data"),
        PW_REQUEST_TIMEOUT="5",
        POWERWALL_ENV_FILE=str(tmp_path / "none.env"),
    )
    for key in ("PW_CUSTOMER_PASSWORD", "PW_GATEWAY_PASSWORD", "INFLUX_URL", "SITE_NAME"):
        env.pop(key, None)
    if mode == "local":
        env["PW_CUSTOMER_PASSWORD"] = sim.customer_password
    elif mode == "tedapi":
        env["PW_GATEWAY_PASSWORD"] = sim.gateway_password
    env.update(extra_env)
    (tmp_path / "none.env").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "powerwall_service.cli", "poll", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return done.returncode, done.stdout, done.stderr


def expected_metrics(truth: dict[str, Any], mode: str, flavour: str) -> dict[str, Any]:
    """What the mode serves (the README's table of what the simulated gateway serves), from the truth.

    A Powerwall 3 on the LAN serves only the core: power, level, grid status and the counters.
    """
    expected: dict[str, Any] = {name: truth[name] for name in (*POWERS, *COUNTERS)}
    expected["battery_percentage"] = truth["battery_percentage"]
    expected["battery_percentage_app"] = truth["battery_percentage"] / 0.95 - 5 / 0.95
    expected["grid_status"] = "UP"
    expected["grid_status_code"] = 1
    if mode == "local":
        for location in ("site", "battery", "load", "solar"):
            expected[f"{location}_voltage_v"] = truth[f"{location}_voltage_v"]
    if mode == "local" and flavour == "pw3":
        expected["alerts"] = "SystemConnectedToGrid"
        return expected
    expected["din"] = truth["din"]
    expected["firmware"] = truth["firmware"].split()[0]
    expected["battery_nominal_energy_remaining_wh"] = truth["nominal_energy_remaining_wh"]
    expected["battery_nominal_full_energy_wh"] = truth["nominal_full_pack_energy_wh"]
    expected["backup_reserve_percent"] = truth["backup_reserve_percent"] / 0.95 - 5 / 0.95
    expected["operation_mode"] = truth["real_mode"]
    pw3_states = {"PV_Active": "Pv_Active", "PV_Disabled": "Pv_Standby"}
    for name, string in truth["strings"].items():
        key = name.lower()
        expected[f"string_{key}_voltage_v"] = string["voltage_v"]
        expected[f"string_{key}_current_a"] = string["current_a"]
        expected[f"string_{key}_power_w"] = string["power_w"]
        expected[f"string_{key}_connected"] = string["connected"]
        if mode == "tedapi":
            state = string["state"]
            expected[f"string_{key}_state"] = pw3_states.get(state, state) if flavour == "pw3" else state
    return expected


def expected_powerwalls(truth: dict[str, Any], mode: str, flavour: str) -> dict[str, dict[str, Any]]:
    if mode == "local" and flavour == "pw3":
        return {}
    return {
        serial: {
            "nominal_energy_remaining_wh": unit["nominal_energy_remaining_wh"],
            "nominal_full_pack_energy_wh": unit["nominal_full_pack_energy_wh"],
            "power_w": unit["power_w"],
        }
        for serial, unit in truth["powerwalls"].items()
    }


@pytest.mark.parametrize("mode", ["local", "tedapi"])
@pytest.mark.parametrize("flavour", ["pw2", "pw3"])
def test_poll_prints_every_metric_with_the_truths_value(
    simulator: Callable[..., Simulator], tmp_path: Path, mode: str, flavour: str
) -> None:
    sim = simulator(flavour=flavour, firmware="25.10.1", powerwalls=1)
    truth = sim.state()
    before = sum(int(n) for n in sim.requests().values())

    code, out, err = run_poll(sim, mode, tmp_path, "--pretty", "--no-push")

    assert code == 0, err
    printed = json.loads(out)
    served_site_name = not (mode == "local" and flavour == "pw3")
    assert printed["site"] == (truth["site_name"] if served_site_name else "unknown")
    assert_values(printed["metrics"], expected_metrics(truth, mode, flavour))
    for serial, values in expected_powerwalls(truth, mode, flavour).items():
        # pypowerwall rounds a TEDAPI battery block's energies to whole Wh.
        assert_values(printed["powerwalls"][serial], values, tolerance=1.0)
    sent = sum(int(n) for n in sim.requests().values()) - before
    assert printed["requests"] == sent
    assert sent <= FULL_READ_BOUND[mode]


def assert_values(printed: dict[str, Any], expected: dict[str, Any], tolerance: float = 0.01) -> None:
    for name, value in expected.items():
        assert name in printed, f"{name} missing"
        if isinstance(value, float):
            assert printed[name] == pytest.approx(value, abs=tolerance), name
        else:
            assert printed[name] == value, name


def test_poll_of_an_unreachable_gateway_exits_1_with_one_line(
    simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = simulator(flavour="pw2", firmware="25.10.1", powerwalls=1)
    sim.put_state(down=True)

    code, out, err = run_poll(sim, "local", tmp_path)

    assert code == 1
    assert out == ""
    reason = [line for line in err.splitlines() if line.startswith("cannot read the gateway")]
    assert len(reason) == 1
    assert "PW_HOST" in reason[0]


def test_poll_without_credentials_exits_2(simulator: Callable[..., Simulator], tmp_path: Path) -> None:
    sim = simulator(flavour="pw2", firmware="25.10.1", powerwalls=1)
    before = sum(int(n) for n in sim.requests().values())

    code, out, err = run_poll(sim, "none", tmp_path)

    assert code == 2
    assert out == ""
    assert "PW_CUSTOMER_PASSWORD or PW_GATEWAY_PASSWORD" in err
    assert sum(int(n) for n in sim.requests().values()) == before


def test_poll_pushes_the_reading_to_influxdb(
    simulator: Callable[..., Simulator], influxd: InfluxServer, tmp_path: Path
) -> None:
    sim = simulator(flavour="pw2", firmware="25.10.1", powerwalls=1)
    database = influxd.create_database()

    code, out, err = run_poll(
        sim, "local", tmp_path, INFLUX_URL=influxd.url, INFLUX_API="v1", INFLUX_DATABASE=database
    )

    assert code == 0, err
    printed = json.loads(out)
    rows = influxd.rows(database, "powerwall")
    assert len(rows) == 1
    assert rows[0]["site_power_w"] == pytest.approx(printed["metrics"]["site_power_w"])
    assert rows[0]["site"] == printed["site"]


def test_poll_that_cannot_push_prints_the_reading_and_exits_3(
    simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = simulator(flavour="pw2", firmware="25.10.1", powerwalls=1)
    nothing_listens = f"http://127.0.0.1:{free_port()}"

    code, out, err = run_poll(
        sim, "local", tmp_path, INFLUX_URL=nothing_listens, INFLUX_API="v1", INFLUX_DATABASE="db"
    )

    assert code == 3
    assert json.loads(out)["metrics"]["site_power_w"] == pytest.approx(sim.state()["site_power_w"])
    reason = [line for line in err.splitlines() if "InfluxDB" in line]
    assert len(reason) == 1
