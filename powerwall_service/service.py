"""The polling loop and its fan-out: gateway -> Snapshot -> Reading -> store -> sinks.

Poll k starts at t0 + k x PW_POLL_INTERVAL on the monotonic clock, so the schedule never drifts;
a poll that overruns its slot skips the missed slots instead of bunching up. Each reading is in
the local store before anything touches the network. InfluxDB drains the store in its own task,
and every other sink gets the reading in a task of its own, so none of them can delay a poll or
each other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from powerwall_service.catalogue import reading_from_snapshot, site_for
from powerwall_service.config import Settings
from powerwall_service.gateway.client import GatewayClient
from powerwall_service.gateway.errors import PowerwallError
from powerwall_service.health import HealthRegistry, State
from powerwall_service.reading import Reading
from powerwall_service.sinks.influx import InfluxWriter
from powerwall_service.sinks.store import AsyncStore, StoreClockError, StoreError
from powerwall_service.snapshot import Snapshot

log = logging.getLogger(__name__)

SINK_TIMEOUT_S = 10.0
"""The longest a fan-out sink may take with one reading before it is abandoned."""


class Sink(Protocol):
    """An output that takes each reading as it happens (MQTT, for one)."""

    name: str

    async def publish(self, reading: Reading) -> None: ...


@dataclass
class PollStats:
    """Counters for /status. Touched only on the event loop."""

    polls: int = 0
    successes: int = 0
    failures: int = 0
    held_back: int = 0
    gateway_requests: int = 0
    last_poll_requests: int | None = None
    consecutive_failures: int = 0
    last_poll_time: datetime | None = None
    last_success_time: datetime | None = None
    last_error: str | None = None
    durations_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    start_lag_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll produced: a reading, or the reason there is none."""

    reading: Reading | None
    snapshot: Snapshot | None
    error: str | None


class PowerwallService:
    """Owns the gateway client, the store, the sinks and the health registry of one process."""

    def __init__(self, settings: Settings, sinks: Sequence[Sink] = ()) -> None:
        self.settings = settings
        self.health = HealthRegistry()
        self.health.add("powerwall")
        self.health.add("store")
        self.health.add("influxdb", enabled=settings.influx_enabled)
        self.health.add("mqtt", enabled=False, detail=_not_built("MQTT publishing", settings.mqtt_enabled))
        self.health.add(
            "wifi", enabled=False, detail=_not_built("Wi-Fi auto-connect", settings.pw_connect_wifi)
        )
        self.store = AsyncStore.from_settings(settings, self.health.get("store"))
        self.client = GatewayClient(settings, self.health.get("powerwall"))
        self.influx = None
        if settings.influx_enabled:
            self.influx = InfluxWriter(settings, self.store, self.health.get("influxdb"))
        self.sinks = list(sinks)
        self.stats = PollStats()
        self.latest: PollResult | None = None
        self._gateway_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._sink_tasks: set[asyncio.Task[None]] = set()
        self._last_live_read = -math.inf

    @property
    def loop_running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def start(self) -> None:
        """Open the store (refusing a second process on it) and start the loop and the writer."""
        await self.store.open()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll-loop"))
        if self.influx is not None:
            self._tasks.append(asyncio.create_task(self.influx.run(), name="influx-writer"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._sink_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sink_tasks, return_exceptions=True)
        self._tasks.clear()
        await self.client.close()
        await self.store.close()

    async def _poll_loop(self) -> None:
        interval = self.settings.pw_poll_interval
        t0 = time.monotonic()
        slot = 0
        while True:
            target = t0 + slot * interval
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.stats.start_lag_s.append(max(0.0, time.monotonic() - target))
            await self.poll_once(store=True)
            slot = max(slot + 1, math.floor((time.monotonic() - t0) / interval) + 1)

    async def poll_once(self, store: bool = True, publish: bool = True) -> PollResult:
        """Read the gateway once; store the reading unless `store` is false, hand it to the sinks
        unless `publish` is false (a live read through the API may ask for either alone)."""
        async with self._gateway_lock:
            started = time.monotonic()
            self.stats.polls += 1
            self.stats.last_poll_time = datetime.now(UTC)
            try:
                snapshot = await self.client.read()
            except PowerwallError as exc:
                result = PollResult(None, None, str(exc))
            else:
                reading = reading_from_snapshot(snapshot, site_for(snapshot, self.settings))
                result = PollResult(reading, snapshot, None)
            finally:
                self.stats.durations_s.append(time.monotonic() - started)
                requests = self.client.last_poll_requests
                self.stats.last_poll_requests = requests
                self.stats.gateway_requests += requests or 0
        self._count(result)
        if result.reading is not None:
            self.latest = result
            if store:
                await self._keep(result.reading, publish)
            elif publish:
                self._fan_out(result.reading)
        return result

    def _count(self, result: PollResult) -> None:
        if result.reading is None:
            self.stats.failures += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = result.error
        else:
            self.stats.successes += 1
            self.stats.consecutive_failures = 0
            self.stats.last_success_time = datetime.now(UTC)

    async def _keep(self, reading: Reading, publish: bool = True) -> None:
        """Store first, then wake the writer and hand the reading to every other sink."""
        try:
            await self.store.append(reading)
        except StoreClockError as exc:
            self.stats.held_back += 1
            log.warning("%s", exc)
            return
        except StoreError as exc:
            log.error("Local store failed, reading not kept: %s", exc)
        else:
            if self.influx is not None:
                self.influx.notify()
        if publish:
            self._fan_out(reading)

    def _fan_out(self, reading: Reading) -> None:
        for sink in self.sinks:
            task = asyncio.create_task(self._publish(sink, reading), name=f"sink-{sink.name}")
            self._sink_tasks.add(task)
            task.add_done_callback(self._sink_tasks.discard)

    async def _publish(self, sink: Sink, reading: Reading) -> None:
        try:
            await asyncio.wait_for(sink.publish(reading), SINK_TIMEOUT_S)
        except Exception as exc:
            log.warning("Sink %s failed: %s", sink.name, exc)

    def live_read_wait(self) -> float:
        """Seconds until a live read through the API is allowed again (0: allowed now)."""
        return max(0.0, self._last_live_read + self.settings.pw_cache_expire - time.monotonic())

    def note_live_read(self) -> None:
        self._last_live_read = time.monotonic()

    def overall_state(self) -> State:
        """Worst state among enabled components, for quick checks."""
        order = [State.OK, State.STARTING, State.DEGRADED, State.DOWN]
        states = [v.state for v in self.health.views().values() if v.state is not State.DISABLED]
        return max(states, key=order.index, default=State.OK)


def _not_built(feature: str, asked_for: bool) -> str:
    """The honest detail of a component this version does not run yet."""
    if asked_for:
        log.warning("%s is configured but not available in this version; it stays off", feature)
        return f"{feature} is configured but not available in this version"
    return f"{feature} is not enabled"
