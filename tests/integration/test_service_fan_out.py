"""The polling loop's fan-out: every sink gets every reading, and a stuck sink delays nothing.

The service runs in-process against the simulated gateway (a real process, real HTTPS, the real
pypowerwall); the sinks are the test's own, since the contract under test is the service's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from powerwall_service.reading import Reading
from powerwall_service.service import PowerwallService
from tests.fixtures.simulator import Simulator, gateway_settings


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def publish(self, reading: Reading) -> None:
        self.readings.append(reading)


class StuckSink:
    """A sink whose output never answers, like a broker that accepts and then hangs."""

    name = "stuck"

    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, reading: Reading) -> None:
        self.calls += 1
        await asyncio.Event().wait()


async def test_every_sink_gets_each_stored_reading_and_a_stuck_one_delays_nothing(
    simulator: Callable[..., Simulator], tmp_path: Path, no_ca_bundle: None
) -> None:
    sim = simulator(flavour="pw2", firmware="23.28.2")
    settings = gateway_settings(
        sim, "local", tmp_path, pw_poll_interval=1.0, store_path=tmp_path / "store.db"
    )
    recording, stuck = RecordingSink(), StuckSink()
    service = PowerwallService(settings, sinks=[stuck, recording])
    await service.store.open()
    try:
        started = time.monotonic()
        results = [await service.poll_once() for _ in range(3)]
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.1)
        assert all(result.reading is not None for result in results)
        assert [r.timestamp for r in recording.readings] == [r.reading.timestamp for r in results]  # type: ignore[union-attr]
        assert stuck.calls == 3
        assert elapsed < 5, "three polls must not wait for a sink that never answers"
        assert recording.readings[-1].fields["site_power_w"] == pytest.approx(sim.state()["site_power_w"])

        unstored = await service.poll_once(store=False, publish=False)
        await asyncio.sleep(0.1)
        assert unstored.reading is not None
        assert len(recording.readings) == 3, "a live read that asked for no publishing publishes nothing"
    finally:
        stopping = time.monotonic()
        await service.stop()
        assert time.monotonic() - stopping < 2, "stopping does not wait for a stuck sink"
