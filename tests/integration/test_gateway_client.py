"""The gateway client's normal path: the real pypowerwall against the simulator process, frozen.

What a user relies on: every value equals the simulator's truth, nothing is invented, and the
client is gentle with the gateway (the core plus one slower read per poll in local mode, identity
not re-read every poll). The request counts the client reports are checked against what the
simulator itself counted (`GET /_sim/requests`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from powerwall_service.config import Settings
from powerwall_service.gateway.client import LOCAL_REQUEST_BOUND, GatewayClient
from powerwall_service.snapshot import Snapshot
from tests.fixtures.simulator import Simulator, gateway_settings

STEADY_POLLS = 6

pytestmark = pytest.mark.usefixtures("no_ca_bundle")


def settings_for(sim: Simulator, mode: str, data_dir: Path) -> Settings:
    return gateway_settings(
        sim,
        mode,
        data_dir,
        pw_request_timeout=5.0,
        pw_poll_interval=1.0,
        pw_cache_expire=0.5,
    )


def sent(sim: Simulator) -> int:
    return sum(int(n) for n in sim.requests().values())


def assert_core(snapshot: Snapshot, truth: dict[str, Any]) -> None:
    for name in ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w", "battery_percentage"):
        assert getattr(snapshot, name) == pytest.approx(truth[name], abs=0.01), name
    assert snapshot.battery_percentage_app == pytest.approx(truth["battery_percentage"] / 0.95 - 5 / 0.95)
    assert snapshot.grid_status == "UP"
    assert snapshot.grid_status_code == 1


def assert_slow(snapshot: Snapshot, truth: dict[str, Any], flavour: str) -> None:
    assert snapshot.din == truth["din"]
    assert snapshot.firmware == truth["firmware"].split()[0]
    assert snapshot.site_name == truth["site_name"]
    assert set(snapshot.powerwalls) == set(truth["powerwalls"])
    for serial, unit in truth["powerwalls"].items():
        got = snapshot.powerwalls[serial]
        assert got.nominal_full_pack_energy_wh == pytest.approx(unit["nominal_full_pack_energy_wh"], abs=1)
        assert got.nominal_energy_remaining_wh == pytest.approx(unit["nominal_energy_remaining_wh"], abs=1)
        assert got.power_w == pytest.approx(unit["power_w"], abs=1)
    for name, string in truth["strings"].items():
        got_string = snapshot.strings[name]
        assert got_string.voltage_v == pytest.approx(string["voltage_v"])
        assert got_string.current_a == pytest.approx(string["current_a"])
        assert got_string.power_w == pytest.approx(string["power_w"])
        assert got_string.connected is string["connected"]
    assert snapshot.alerts is not None
    assert set(truth["alerts"]) <= set(snapshot.alerts)


async def read_steadily(client: GatewayClient, sim: Simulator) -> list[int]:
    """Poll STEADY_POLLS times; each poll's reported request count must be what the gateway saw."""
    counts = []
    for _ in range(STEADY_POLLS):
        before = sent(sim)
        await client.read()
        assert client.last_poll_requests == sent(sim) - before
        counts.append(sent(sim) - before)
    return counts


@pytest.mark.parametrize("flavour", ["pw2", "pw3"])
async def test_local_mode_reads_the_truth_in_at_most_four_requests_a_poll(
    simulator: Callable[..., Simulator], tmp_path: Path, flavour: str
) -> None:
    sim = simulator(flavour=flavour, firmware="25.10.1", powerwalls=2)
    truth = sim.state()
    client = GatewayClient(settings_for(sim, "local", tmp_path))
    try:
        before = sent(sim)
        first = await client.read()
        assert client.last_poll_requests == sent(sim) - before
        assert_core(first, truth)
        status_reads = int(sim.requests().get("/api/status", 0))

        counts = await read_steadily(client, sim)
        assert max(counts) <= LOCAL_REQUEST_BOUND
        assert int(sim.requests().get("/api/status", 0)) == status_reads, "identity is not re-read every poll"
        last = await client.read()
        assert_core(last, truth)
        if flavour == "pw2":
            assert_slow(last, truth, flavour)
    finally:
        await client.close()


@pytest.mark.parametrize("flavour", ["pw2", "pw3"])
async def test_tedapi_mode_reads_the_truth_and_counts_its_requests(
    simulator: Callable[..., Simulator], tmp_path: Path, flavour: str
) -> None:
    sim = simulator(flavour=flavour, firmware="25.10.1", powerwalls=2)
    truth = sim.state()
    client = GatewayClient(settings_for(sim, "tedapi", tmp_path))
    try:
        first = await client.read()
        assert_core(first, truth)
        assert_slow(first, truth, flavour)
        counts = await read_steadily(client, sim)
        assert max(counts) < sent(sim) / STEADY_POLLS * 2
        assert_core(await client.read(), truth)
    finally:
        await client.close()


async def test_a_ca_bundle_in_the_environment_does_not_break_tedapi(
    simulator: Callable[..., Simulator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests would verify the self-signed gateway against REQUESTS_CA_BUNDLE; the client must not."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bundle))
    sim = simulator(flavour="pw3", firmware="25.10.1", powerwalls=1)
    client = GatewayClient(settings_for(sim, "tedapi", tmp_path))
    try:
        assert_core(await client.read(), sim.state())
    finally:
        await client.close()


async def test_a_lifetime_counter_that_reads_zero_or_goes_backwards_is_unknown(
    simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = simulator(flavour="pw2", firmware="25.10.1", powerwalls=1)
    client = GatewayClient(settings_for(sim, "local", tmp_path))
    try:
        first = await client.read()
        imported = sim.state()["site_energy_imported_wh"]
        assert first.site_energy_imported_wh == pytest.approx(imported)
        sim.put_state(site_energy_imported_wh=imported - 1000, solar_energy_exported_wh=0)
        backwards = await client.read()
        assert backwards.site_energy_imported_wh is None
        assert backwards.solar_energy_exported_wh is None
        assert backwards.load_energy_imported_wh == pytest.approx(sim.state()["load_energy_imported_wh"])
        sim.put_state(site_energy_imported_wh=imported + 1000)
        onwards = await client.read()
        assert onwards.site_energy_imported_wh == pytest.approx(imported + 1000)
    finally:
        await client.close()
