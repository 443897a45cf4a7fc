"""TEDAPI against the simulator as a real process: the real pypowerwall 0.22.2 in full TEDAPI mode.

Full TEDAPI mode (gateway password, no customer password) is how Powerwall 3 owners, and since
firmware 25.10 many others, reach their gateway. With the simulator frozen, every reading the
library derives must equal the truth `GET /_sim/state` reports, for a pw2 system (Powerwall+
inverters, strings A..D, thermal-controller temperatures) on plain bodies and for a pw3 system
(ComponentsQuery per unit, strings A..F, pack temperatures) on firmware that gzips its bodies.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pypowerwall
import pytest

from tests.fixtures.processes import REPO_ROOT, ManagedProcess
from tests.fixtures.simulator import Simulator, start_simulator

TEDAPI_USER = "Tesla_Energy_Device"
_SAME = {m: "yes" for m in ("power", "level", "site_name", "din", "version", "status", "system_status")}
_SAME |= {"get_reserve": "yes", "get_mode": "yes", "vitals": "synthesized", "alerts": "yes"}
# The README table's TEDAPI rows, cell by cell; the tests below check each claim.
TEDAPI_ROWS = {
    "pw2": _SAME | {"grid_status": "UP/DOWN", "battery_blocks": "p_out kW", "strings": "yes", "temps": "yes"},
    "pw3": _SAME
    | {
        "grid_status": "UP/DOWN",
        "battery_blocks": "p_out kW, no temps",
        "strings": "Pv_ states",
        "temps": "pack",
    },
}


FIRMWARE = {"pw2": "25.10.1", "pw3": "25.42.2"}
ENERGY_COUNTERS = (
    ("site_energy_imported_wh", "site", "imported"),
    ("site_energy_exported_wh", "site", "exported"),
    ("solar_energy_exported_wh", "solar", "exported"),
    ("battery_energy_imported_wh", "battery", "imported"),
    ("battery_energy_exported_wh", "battery", "exported"),
    ("load_energy_imported_wh", "load", "imported"),
)


@pytest.fixture(scope="module")
def gateways(module_processes: Callable[..., ManagedProcess]) -> dict[str, Simulator]:
    """A frozen pw2 (plain bodies) and pw3 (gzipped bodies) gateway, two Powerwalls each, per module."""
    return {
        flavour: start_simulator(module_processes, flavour=flavour, firmware=firmware, powerwalls=2)
        for flavour, firmware in FIRMWARE.items()
    }


@pytest.fixture
def pw2(gateways: dict[str, Simulator]) -> Iterator[Simulator]:
    yield gateways["pw2"]
    gateways["pw2"].delete_state()


@pytest.fixture
def pw3(gateways: dict[str, Simulator]) -> Iterator[Simulator]:
    yield gateways["pw3"]
    gateways["pw3"].delete_state()


def connect(sim: Simulator, tmp_path: Path, gw_pwd: str | None = None) -> Any:
    return pypowerwall.Powerwall(
        host=f"127.0.0.1:{sim.port}",
        password="",
        gw_pwd=gw_pwd or sim.gateway_password,
        failover=False,
        cachefile=str(tmp_path / "pw.auth"),
        timeout=2,
    )


def basic(password: str, user: str = TEDAPI_USER) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(sim: Simulator, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    # The simulator's certificate is self-signed and made at start: nothing to verify it against.
    return httpx.get(f"{sim.base_url}{path}", headers=headers, verify=False, timeout=5)  # noqa: S501


def expected_strings(truth: dict[str, Any], flavour: str) -> dict[str, dict[str, Any]]:
    """The strings as pypowerwall reports them from TEDAPI: pw2 states come from the string
    switch (connected or not), pw3 states are the inverter's own (Pv_Active, Pv_Standby)."""
    pw3_states = {"PV_Active": "Pv_Active", "PV_Disabled": "Pv_Standby"}
    out = {}
    for name, s in truth["strings"].items():
        state = pw3_states.get(s["state"], s["state"]) if flavour == "pw3" else s["state"]
        out[name] = {
            "Voltage": s["voltage_v"],
            "Current": s["current_a"],
            "Power": s["power_w"],
            "State": state,
            "Connected": s["connected"],
        }
    return out


def normalised_alerts(truth: dict[str, Any]) -> set[str]:
    """alerts() = the gateway's alerts plus the grid status, SystemGridConnected renamed."""
    alerts = {*truth["alerts"], truth["grid_status"]}
    return {a.replace("SystemGridConnected", "SystemConnectedToGrid") for a in alerts}


def readme_tedapi_rows() -> dict[str, dict[str, str]]:
    """flavour -> method -> cell for the README table's TEDAPI rows."""
    section = (REPO_ROOT / "README.md").read_text().split("<!-- served-table -->")[1]
    rows = [
        line for line in section.split("<!-- end served-table -->")[0].splitlines() if line.startswith("|")
    ]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    out = {}
    for line in rows[2:]:
        row = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        if row["mode"] == "tedapi":
            out[row["flavour"]] = {k: v for k, v in row.items() if k not in ("flavour", "mode", "firmware")}
    return out


def test_the_readme_table_says_what_these_tests_check() -> None:
    assert readme_tedapi_rows() == TEDAPI_ROWS


@pytest.mark.parametrize("flavour", ["pw2", "pw3"])
def test_full_tedapi_mode_reads_the_truth(
    request: pytest.FixtureRequest, tmp_path: Path, no_ca_bundle: None, flavour: str
) -> None:
    sim: Simulator = request.getfixturevalue(flavour)
    truth = sim.state()
    pw = connect(sim, tmp_path)
    assert pw.tedapi_mode == "full"
    assert pw.client.tedapi.pw3 is (flavour == "pw3")

    assert pw.power() == {
        "site": truth["site_power_w"],
        "solar": truth["solar_power_w"],
        "battery": truth["battery_power_w"],
        "load": truth["load_power_w"],
    }
    assert pw.level() == truth["battery_percentage"]
    # Lifetime energies are not in TEDAPI: pypowerwall merges them from /api/meters/aggregates,
    # logged in as customer with the gateway password's last 5 characters.
    aggregates = pw.poll("/api/meters/aggregates")
    assert {
        key: aggregates[location][f"energy_{direction}"] for key, location, direction in ENERGY_COUNTERS
    } == {key: truth[key] for key, _, _ in ENERGY_COUNTERS}
    assert pw.grid_status() == "UP"
    assert pw.site_name() == truth["site_name"]
    assert pw.din() == truth["din"]
    assert pw.version() == truth["firmware"]
    assert (pw.status()["din"], pw.status()["version"]) == (truth["din"], truth["firmware"])
    assert pw.get_reserve(scale=False) == truth["backup_reserve_percent"]
    assert pw.get_mode() == truth["real_mode"]

    status = pw.system_status()
    assert status["nominal_full_pack_energy"] == truth["nominal_full_pack_energy_wh"]
    assert status["nominal_energy_remaining"] == truth["nominal_energy_remaining_wh"]
    assert status["system_island_state"] == truth["grid_status"]
    assert status["available_blocks"] == len(truth["powerwalls"])

    strings = pw.strings()
    assert strings == expected_strings(truth, flavour)
    letters = "ABCDEF" if flavour == "pw3" else "ABCD"
    assert set(strings) == {letter + suffix for suffix in ("", "1") for letter in letters}

    blocks = pw.battery_blocks()
    temps = pw.temps()
    vitals = pw.vitals()
    assert set(blocks) == set(truth["powerwalls"])
    for serial, unit in truth["powerwalls"].items():
        block = blocks[serial]
        assert block["p_out"] == unit["power_w"] / 1000, "TEDAPI reports the inverter power in kW"
        if flavour == "pw2":
            assert block["nominal_full_pack_energy"] == unit["nominal_full_pack_energy_wh"]
            assert block["nominal_energy_remaining"] == unit["nominal_energy_remaining_wh"]
            assert (block["temperature"], block["THC_State"]) == (unit["temperature_c"], unit["state"])
            assert temps[f"TETHC--{unit['din']}"] == unit["temperature_c"]
        else:
            # A PW3 reports its pack in kWh; pypowerwall truncates kWh x 1000 to whole Wh.
            assert block["nominal_full_pack_energy"] == pytest.approx(
                unit["nominal_full_pack_energy_wh"], abs=1
            )
            assert block["nominal_energy_remaining"] == pytest.approx(
                unit["nominal_energy_remaining_wh"], abs=1
            )
            assert "temperature" not in block
            assert temps[f"TEPOD--{unit['din']}"] == unit["temperature_c"]
        pod = vitals[f"TEPOD--{unit['din']}"]
        assert pod["POD_nom_full_pack_energy"] == block["nominal_full_pack_energy"]
    assert len(temps) == len(truth["powerwalls"])
    assert f"STSTSM--{truth['din']}" in vitals
    assert len([k for k in vitals if k.startswith("PVAC--")]) == 2

    assert set(pw.alerts()) == normalised_alerts(truth)


@pytest.mark.parametrize("grid_status", ["SystemIslandedActive", "SystemTransitionToGrid"])
def test_off_grid_reads_as_grid_down_with_its_alert(
    pw3: Simulator, tmp_path: Path, no_ca_bundle: None, grid_status: str
) -> None:
    truth = pw3.put_state(grid_status=grid_status)
    pw = connect(pw3, tmp_path)
    assert pw.grid_status() == "DOWN", "TEDAPI knows only connected or not: never SYNCING"
    assert grid_status in pw.alerts()
    assert "SystemConnectedToGrid" not in pw.alerts()
    assert pw.system_status()["system_island_state"] == "SystemIslandedActive"
    assert pw.power()["site"] == truth["site_power_w"]


def test_the_portal_tells_the_flavour_and_the_din_needs_the_gateway_password(
    pw2: Simulator, pw3: Simulator
) -> None:
    assert get(pw2, "/").status_code == 200
    assert get(pw3, "/").status_code == 404

    plain = get(pw2, "/tedapi/din", basic(pw2.gateway_password))
    assert (plain.status_code, plain.text) == (200, pw2.state()["din"])
    zipped = get(pw3, "/tedapi/din", basic(pw3.gateway_password))
    assert zipped.content[:2] == b"\x1f\x8b"
    assert gzip.decompress(zipped.content).decode() == pw3.state()["din"]

    assert get(pw2, "/tedapi/din").status_code == 403
    assert get(pw2, "/tedapi/din", basic("wrong-password")).status_code == 403
    assert get(pw2, "/tedapi/din", basic(pw2.gateway_password, user="customer")).status_code == 403


def test_a_wrong_gateway_password_leaves_pypowerwall_unconnected(
    pw3: Simulator, tmp_path: Path, no_ca_bundle: None
) -> None:
    pw = connect(pw3, tmp_path, gw_pwd="NOT-THE-PASSWORD")
    assert pw.client is None
    assert pw.level() is None


def test_a_changed_gateway_password_locks_out_the_old_one(pw2: Simulator) -> None:
    """A firmware update that resets the gateway password (reference §5.1) ends TEDAPI access."""
    old = pw2.gateway_password
    pw2.put_state(gateway_password="NEWGATEWAYPW")
    try:
        assert get(pw2, "/tedapi/din", basic(old)).status_code == 403
        assert get(pw2, "/tedapi/din", basic("NEWGATEWAYPW")).status_code == 200
    finally:
        pw2.put_state(gateway_password=old)
    assert get(pw2, "/tedapi/din", basic(old)).status_code == 200
