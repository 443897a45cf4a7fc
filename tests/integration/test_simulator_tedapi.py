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
from pathlib import Path
from typing import Any

import httpx
import pypowerwall
import pytest

from tests.fixtures.simulator import Simulator

TEDAPI_USER = "Tesla_Energy_Device"
NUMERIC = ("Voltage", "Current", "Power")


@pytest.fixture
def no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """pypowerwall's TEDAPI trusts a self-signed gateway only without these (reference §3.10)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


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


@pytest.mark.parametrize(
    ("flavour", "firmware"),
    [("pw2", "25.10.1"), ("pw3", "25.42.2")],
)
def test_full_tedapi_mode_reads_the_truth(
    simulator: Any, tmp_path: Path, no_ca_bundle: None, flavour: str, firmware: str
) -> None:
    sim: Simulator = simulator(flavour=flavour, firmware=firmware, powerwalls=2)
    truth = sim.state()
    pw = connect(sim, tmp_path)
    assert pw.tedapi_mode == "full"
    assert pw.client.tedapi.pw3 is (flavour == "pw3")

    assert pw.power() == pytest.approx(
        {
            "site": truth["site_power_w"],
            "solar": truth["solar_power_w"],
            "battery": truth["battery_power_w"],
            "load": truth["load_power_w"],
        }
    )
    assert pw.level() == pytest.approx(truth["battery_percentage"])
    assert pw.grid_status() == "UP"
    assert pw.din() == truth["din"]
    assert pw.version() == truth["firmware"]
    assert pw.site_name() == truth["site_name"]

    strings = pw.strings()
    expected = expected_strings(truth, flavour)
    assert set(strings) == set(expected)
    for name, string in strings.items():
        assert string == {
            **expected[name],
            **{k: pytest.approx(v) for k, v in expected[name].items() if k in NUMERIC},
        }
    letters = "ABCDEF" if flavour == "pw3" else "ABCD"
    assert set(strings) == {letter + suffix for suffix in ("", "1") for letter in letters}

    blocks = pw.battery_blocks()
    assert set(blocks) == set(truth["powerwalls"])
    temps = pw.temps()
    for serial, unit in truth["powerwalls"].items():
        block = blocks[serial]
        assert block["nominal_full_pack_energy"] == pytest.approx(unit["nominal_full_pack_energy_wh"], abs=1)
        assert block["nominal_energy_remaining"] == pytest.approx(unit["nominal_energy_remaining_wh"], abs=1)
        assert block["p_out"] == pytest.approx(unit["power_w"] / 1000)
        prefix = "TEPOD" if flavour == "pw3" else "TETHC"
        assert temps[f"{prefix}--{unit['din']}"] == unit["temperature_c"]
        if flavour == "pw2":
            assert block["temperature"] == unit["temperature_c"]

    assert set(pw.alerts()) == normalised_alerts(truth)

    status = pw.system_status()
    assert status["nominal_full_pack_energy"] == pytest.approx(truth["nominal_full_pack_energy_wh"])
    assert status["nominal_energy_remaining"] == pytest.approx(truth["nominal_energy_remaining_wh"])
    assert status["system_island_state"] == truth["grid_status"]
    assert status["available_blocks"] == 2

    vitals = pw.vitals()
    assert f"STSTSM--{truth['din']}" in vitals
    assert len([k for k in vitals if k.startswith("PVAC--")]) == 2


def test_an_outage_reads_as_grid_down_with_its_alert(
    simulator: Any, tmp_path: Path, no_ca_bundle: None
) -> None:
    sim: Simulator = simulator(flavour="pw3", firmware="25.10.1", powerwalls=1)
    sim.put_state(grid_status="SystemIslandedActive")
    truth = sim.state()
    pw = connect(sim, tmp_path)
    assert pw.grid_status() == "DOWN"
    assert "SystemIslandedActive" in pw.alerts()
    assert pw.system_status()["system_island_state"] == "SystemIslandedActive"
    assert pw.power()["site"] == pytest.approx(truth["site_power_w"])


def test_the_portal_tells_the_flavour_and_the_din_needs_the_gateway_password(simulator: Any) -> None:
    pw2: Simulator = simulator(flavour="pw2", firmware="25.10.1")
    pw3: Simulator = simulator(flavour="pw3", firmware="25.42.2")
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
    simulator: Any, tmp_path: Path, no_ca_bundle: None
) -> None:
    sim: Simulator = simulator(flavour="pw3", firmware="25.10.1")
    pw = connect(sim, tmp_path, gw_pwd="NOT-THE-PASSWORD")
    assert pw.client is None
    assert pw.level() is None
