"""The gateway client: one poll of the gateway -> a Snapshot, on time, whatever the gateway does.

pypowerwall is blocking and can block for long (reference §1.2, §6), so each pypowerwall
instance lives in a worker thread of its own and the event loop only waits for it, with a hard
deadline (PW_REQUEST_TIMEOUT). A call that overruns is abandoned together with its instance and
thread: the thread ends when its call returns, and the next poll starts a fresh instance. If
earlier abandoned calls are still stuck, a poll fails at once instead of piling up threads.

Recovery follows the spec ("Connection Error Handling"): auth failures are counted and three in a
row force a full reconnect (a new pypowerwall instance); a refused login waits a capped,
doubling back-off before the next login, so a wrong password cannot lock the user out; a 429 is
honoured (Retry-After, else PW_RATE_LIMIT_COOLDOWN) with no request at all until it ends. An
unreachable gateway is cheap to probe, so it is simply tried again on every poll.

Requests per poll: the core (three in local mode) plus one slower read in turn (firmware and site
name every few minutes, else /api/system_status, /api/operation, PV strings and alerts). The
first read of a new instance, and the first after a failure, read everything once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from powerwall_service.config import Settings
from powerwall_service.gateway.errors import (
    PowerwallAuthError,
    PowerwallError,
    PowerwallRateLimitedError,
    PowerwallTimeoutError,
)
from powerwall_service.gateway.reader import (
    ALL_SLOTS,
    COUNTERS,
    IDENTITY_SLOTS,
    GatewayReader,
    Mode,
    ReadResult,
    Slot,
    credentials_mode,
    password_setting,
)
from powerwall_service.gateway.transport import Recorder, recording
from powerwall_service.health import Component
from powerwall_service.snapshot import PowerwallUnit, Snapshot

log = logging.getLogger(__name__)

AUTH_FAILURE_THRESHOLD = 3
IDENTITY_REFRESH_S = 300.0
MAX_ABANDONED_THREADS = 2
LOCAL_REQUEST_BOUND = 4
"""Requests of a steady-state poll in local mode: the three core reads plus one slower read."""

T = TypeVar("T")


class _Worker:
    """A daemon thread that owns one GatewayReader and runs its calls one at a time."""

    def __init__(self, settings: Settings, number: int) -> None:
        self.reader = GatewayReader(settings)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"powerwall-{number}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        """Close the instance and end the thread once the current call (if any) returns."""
        self._jobs.put(None)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)
        self.reader.close()


@dataclass
class _SlowValues:
    """The last read of each slow slot, and when (monotonic)."""

    values: dict[Slot, dict[str, Any]] = field(default_factory=dict)
    read_at: dict[Slot, float] = field(default_factory=dict)


class GatewayClient:
    """Reads the gateway; `read()` returns a Snapshot or raises a PowerwallError.

    Counters a health view shows: `consecutive_failures`, `last_success`, `last_error`, and
    `last_poll_requests` (requests sent to the gateway by the last poll, None when unknown).
    """

    def __init__(self, settings: Settings, health: Component | None = None) -> None:
        if not (settings.pw_customer_password or settings.pw_gateway_password):
            raise ValueError("PW_CUSTOMER_PASSWORD or PW_GATEWAY_PASSWORD must be set")
        self._settings = settings
        self._health = health
        self.mode: Mode = credentials_mode(settings)
        self._worker: _Worker | None = None
        self._abandoned: list[_Worker] = []
        self._workers_started = 0
        self._read_everything = True
        self._slow = _SlowValues()
        self._last_counters: dict[str, float] = {}
        self._auth_failures = 0
        self._login_refusals = 0
        self._login_retry_at = 0.0
        self._rate_limit: PowerwallRateLimitedError | None = None
        self._rate_limit_until = 0.0
        self.consecutive_failures = 0
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.last_poll_requests: int | None = None
        self.full_reconnects = 0

    @property
    def abandoned_threads(self) -> int:
        """Abandoned worker threads whose call has not returned yet."""
        self._abandoned = [w for w in self._abandoned if w.alive()]
        return len(self._abandoned)

    async def read(self) -> Snapshot:
        self.last_poll_requests = 0
        try:
            snapshot = await self._read()
        except PowerwallError as exc:
            self._failed(exc)
            raise
        self._succeeded()
        return snapshot

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    async def _read(self) -> Snapshot:
        self._refuse_while_waiting()
        if self._auth_failures >= AUTH_FAILURE_THRESHOLD:
            log.info("Forcing full reconnection to Powerwall (auth failures: %d)", self._auth_failures)
            self._drop_worker()
            self.full_reconnects += 1
            self._auth_failures = 0
        elif self._auth_failures:
            # pypowerwall logs in again by itself on the next 401/403 (local mode).
            log.info("Attempting reconnection to recover from auth error")
        if self.abandoned_threads >= MAX_ABANDONED_THREADS:
            raise PowerwallTimeoutError(
                f"{self.abandoned_threads} earlier gateway calls are still stuck after their deadline; "
                "not starting another until they return (the gateway is hanging)"
            )
        worker = self._worker or self._new_worker()
        slots = self._plan()
        recorder = Recorder()
        reader = worker.reader

        def job() -> ReadResult:
            with recording(recorder):
                return reader.read(slots, recorder)

        future = worker.submit(job)
        deadline = self._settings.pw_request_timeout
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), deadline)
        except TimeoutError:
            self.last_poll_requests = recorder.sent
            self._abandon(worker)
            raise PowerwallTimeoutError(
                f"the gateway did not answer within PW_REQUEST_TIMEOUT ({deadline:g} s); "
                "abandoned that call, the next poll starts afresh"
            ) from None
        except PowerwallError:
            self.last_poll_requests = recorder.sent
            raise
        self.last_poll_requests = recorder.sent
        if result.rate_limited is not None:
            self._note_rate_limit(result.rate_limited)
        return self._snapshot(result, slots)

    def _refuse_while_waiting(self) -> None:
        now = time.monotonic()
        if self._rate_limit is not None and now < self._rate_limit_until:
            raise self._rate_limit
        if now < self._login_retry_at:
            setting = password_setting(self.mode)
            raise PowerwallAuthError(
                f"the gateway refused the last login: check {setting}; next login attempt in "
                f"{self._login_retry_at - now:.0f} s",
                setting,
            )

    def _new_worker(self) -> _Worker:
        self._workers_started += 1
        self._worker = _Worker(self._settings, self._workers_started)
        self._read_everything = True
        return self._worker

    def _drop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _abandon(self, worker: _Worker) -> None:
        worker.stop()
        self._abandoned.append(worker)
        if self._worker is worker:
            self._worker = None

    def _plan(self) -> tuple[Slot, ...]:
        """Every slot after a (re)connect or a failure, else the one slot most overdue."""
        if self._read_everything:
            return ALL_SLOTS
        now = time.monotonic()
        due = [
            slot
            for slot in ALL_SLOTS
            if slot not in IDENTITY_SLOTS or now - self._slow.read_at.get(slot, -1e18) >= IDENTITY_REFRESH_S
        ]
        return (min(due, key=lambda slot: self._slow.read_at.get(slot, -1e18)),)

    def _snapshot(self, result: ReadResult, slots: tuple[Slot, ...]) -> Snapshot:
        now = time.monotonic()
        for slot in slots:
            self._slow.values[slot] = result.slots[slot]
            self._slow.read_at[slot] = now
        self._read_everything = False
        merged: dict[str, Any] = {}
        for values in self._slow.values.values():
            merged.update(values)
        units: dict[str, dict[str, Any]] = merged.pop("units", {})
        temperatures: dict[str, float] = merged.get("temperatures", {})
        core = dict(result.core)
        for name in COUNTERS:
            core[name] = self._counter(name, core[name])
        return Snapshot(
            **core,
            **merged,
            powerwalls={
                serial: PowerwallUnit(serial=serial, temperature_c=_temperature(serial, temperatures), **unit)
                for serial, unit in units.items()
            },
        )

    def _counter(self, name: str, value: float | None) -> float | None:
        """A lifetime counter that reads 0 or goes backwards is unknown, not a reset."""
        if value is None or value <= 0:
            return None
        last = self._last_counters.get(name)
        if last is not None and value < last:
            return None
        self._last_counters[name] = value
        return value

    def _note_rate_limit(self, exc: PowerwallRateLimitedError) -> None:
        self._rate_limit = exc
        wait = (exc.retry_at - datetime.now(UTC)).total_seconds()
        self._rate_limit_until = time.monotonic() + max(0.0, wait)

    def _failed(self, exc: PowerwallError) -> None:
        self.consecutive_failures += 1
        self.last_error = str(exc)
        self._read_everything = True
        if isinstance(exc, PowerwallRateLimitedError):
            self._note_rate_limit(exc)
        if isinstance(exc, PowerwallAuthError) and exc.status is not None:
            self._auth_failures += 1
            log.warning(
                "Authentication error fetching power metrics (failure %d/%d)",
                self._auth_failures,
                AUTH_FAILURE_THRESHOLD,
            )
            if exc.login_refused:
                self._login_refusals += 1
                wait = min(
                    self._settings.pw_auth_backoff_max,
                    self._settings.pw_poll_interval * 2 ** (self._login_refusals - 1),
                )
                self._login_retry_at = time.monotonic() + wait
        log.warning("Powerwall poll failed: %s", exc)
        if self._health is not None:
            self._health.fail(str(exc), detail=f"{self.consecutive_failures} polls failed in a row")

    def _succeeded(self) -> None:
        if self._auth_failures or self._login_refusals:
            log.info("Successfully recovered from previous auth failures")
        self._auth_failures = 0
        self._login_refusals = 0
        self._login_retry_at = 0.0
        self._rate_limit = None
        self.consecutive_failures = 0
        self.last_success = datetime.now(UTC)
        if self._health is not None:
            self._health.ok(f"{self.mode} mode, {self.last_poll_requests} requests in the last poll")


def _temperature(serial: str, temperatures: dict[str, float]) -> float | None:
    """pypowerwall names temperature sensors `TETHC--<part>--<serial>` (PW2) or by DIN (PW3)."""
    return next((celsius for sensor, celsius in temperatures.items() if sensor.endswith(serial)), None)
