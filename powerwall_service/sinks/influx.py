"""The InfluxDB writer: drains the local store in order and delivers each reading exactly once.

It runs as its own task, woken by `notify()` after each append, so a slow or dead InfluxDB delays
nothing else. A batch is marked sent only after the server acknowledged it. A 400 (bad data) or
413 (too large) splits the batch in halves until the offending point is alone; that point is set
aside in the store with the server's reason and the rest is delivered (provided the server takes
an empty write, i.e. the request itself is sound). Everything else that fails
(401/403, 404, 429, 5xx, network, TLS) keeps the batch in the store and is retried with capped
exponential back-off, honouring Retry-After, with the reason in health. Re-sending after a crash
cannot duplicate: a point's identity is its measurement, tags and timestamp, which never change.

v2 writes to `/api/v2/write` with `Authorization: Token`; v1 writes to `/write` with the
credentials in a Basic header, never in the URL. Timestamps are written in nanoseconds: the v1
precision `n` (InfluxDB 1.x silently takes `us` and `ns` as nanoseconds, so those must not be used).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx

from powerwall_service.health import Component, State
from powerwall_service.reading import Reading
from powerwall_service.sinks.line_protocol import reading_lines
from powerwall_service.sinks.store import AsyncStore, StoreError

if TYPE_CHECKING:
    from powerwall_service.config import Settings

log = logging.getLogger(__name__)

BATCH_READINGS = 200
"""Readings per write request: a few hundred lines, well under any server's body limit."""
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 300.0
"""A Retry-After beyond this is not trusted; the writer tries again after this long."""
_REJECTED = frozenset({400, 413, 422})
"""Statuses that blame the data: split the batch, set the bad point aside."""


class InfluxWriteError(Exception):
    """A write InfluxDB did not accept; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed request: the reason for health and logs, and how long the server asked us to wait."""

    status: int | None
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class WriterStatus:
    points_written: int
    batches_written: int
    last_error: str | None
    last_write: datetime | None

    def as_dict(self) -> dict[str, int | str | None]:
        return {
            "points_written": self.points_written,
            "batches_written": self.batches_written,
            "last_error": self.last_error,
            "last_write": self.last_write.isoformat() if self.last_write else None,
        }


class InfluxEndpoint:
    """Where and how to write: URL, query parameters and headers for the configured API."""

    def __init__(self, settings: Settings) -> None:
        if settings.influx_url is None:
            raise ValueError("INFLUX_URL is not set")
        base = settings.influx_url.rstrip("/")
        self.measurement = settings.influx_measurement
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        self.params: dict[str, str]
        if settings.influx_api == "v1":
            self.url = f"{base}/write"
            self.params = {"db": settings.influx_database or "", "precision": "n"}
            if settings.influx_retention_policy:
                self.params["rp"] = settings.influx_retention_policy
            if settings.influx_username:
                pair = f"{settings.influx_username}:{settings.influx_password or ''}".encode()
                self.headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
            self.credentials = "INFLUX_USERNAME/INFLUX_PASSWORD"
        else:
            self.url = f"{base}/api/v2/write"
            self.params = {"bucket": settings.influx_bucket or "", "precision": "ns"}
            if settings.influx_org:
                self.params["org"] = settings.influx_org
            if settings.influx_token:
                self.headers["Authorization"] = f"Token {settings.influx_token}"
            self.credentials = "INFLUX_TOKEN"
        self.where = httpx.URL(base).host or base

    def client(self, settings: Settings) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=settings.influx_verify_tls, timeout=settings.influx_timeout)

    async def post(self, client: httpx.AsyncClient, lines: Sequence[str]) -> _Failure | None:
        """Send lines; None when the server acknowledged them, else why not."""
        try:
            response = await client.post(
                self.url, params=self.params, headers=self.headers, content="\n".join(lines).encode()
            )
        except httpx.HTTPError as exc:
            return _Failure(None, self._network_reason(exc))
        if response.is_success:
            return None
        return _Failure(response.status_code, self._http_reason(response), _retry_after(response))

    def _http_reason(self, response: httpx.Response) -> str:
        status = response.status_code
        message = _server_message(response)
        if status in (401, 403):
            return (
                f"InfluxDB at {self.where} refused the credentials ({status}: {message}): "
                f"check {self.credentials}"
            )
        return f"InfluxDB at {self.where} answered {status}: {message}"

    def _network_reason(self, exc: httpx.HTTPError) -> str:
        if _is_certificate_error(exc):
            return (
                f"InfluxDB at {self.where}: TLS certificate not trusted ({_one_line(str(exc))}); "
                "set INFLUX_VERIFY_TLS=false only for a self-signed certificate you trust"
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"InfluxDB at {self.where} did not answer in time ({type(exc).__name__})"
        return f"InfluxDB at {self.where} unreachable: {_one_line(str(exc)) or type(exc).__name__}"


class InfluxWriter:
    """The outbox drain. `run()` until cancelled; `notify()` after each stored reading."""

    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        health: Component,
        *,
        batch_readings: int = BATCH_READINGS,
        max_backoff: float = MAX_BACKOFF_S,
    ) -> None:
        self.settings = settings
        self.endpoint = InfluxEndpoint(settings)
        self.store = store
        self.health = health
        self.batch_readings = batch_readings
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._wake.set()
        self.points_written = 0
        self.batches_written = 0
        self.last_error: str | None = None
        self.last_write: datetime | None = None

    def notify(self) -> None:
        self._wake.set()

    def status(self) -> WriterStatus:
        return WriterStatus(self.points_written, self.batches_written, self.last_error, self.last_write)

    async def run(self) -> None:
        async with self.endpoint.client(self.settings) as client:
            backoff = FIRST_BACKOFF_S
            while True:
                await self._wake.wait()
                self._wake.clear()
                failure = await self._drain(client)
                while failure is not None:
                    self._report(failure)
                    delay = min(failure.retry_after, MAX_RETRY_AFTER_S) if failure.retry_after else backoff
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, self.max_backoff)
                    failure = await self._drain(client)
                backoff = FIRST_BACKOFF_S

    async def _drain(self, client: httpx.AsyncClient) -> _Failure | None:
        """Deliver everything pending, batch by batch; stop at the first failure that needs a wait."""
        while True:
            try:
                batch = await self.store.pending(self.batch_readings)
            except StoreError as exc:
                return _Failure(None, f"local store unavailable: {exc}")
            if not batch:
                return None
            failure = await self._deliver(client, batch)
            if failure is not None:
                return failure

    async def _deliver(self, client: httpx.AsyncClient, batch: list[tuple[int, Reading]]) -> _Failure | None:
        lines = {
            reading_id: reading_lines(reading, self.endpoint.measurement) for reading_id, reading in batch
        }
        body = [line for reading_lines_ in lines.values() for line in reading_lines_]
        failure = await self.endpoint.post(client, body) if body else None
        if failure is None:
            await self._delivered(list(lines), len(body))
            return None
        if failure.status not in _REJECTED:
            return failure
        if len(batch) > 1:
            middle = len(batch) // 2
            return await self._deliver(client, batch[:middle]) or await self._deliver(client, batch[middle:])
        return await self._deliver_alone(client, batch[0][0], lines[batch[0][0]])

    async def _deliver_alone(
        self, client: httpx.AsyncClient, reading_id: int, lines: list[str]
    ) -> _Failure | None:
        """One rejected reading: send its points one by one and set aside those rejected.

        Nothing is recorded until every point has an answer, so a network failure half-way
        leaves the reading unsent and it is tried again whole. A point is blamed only if the
        server accepts an empty write with the same URL and headers: otherwise the request
        itself is wrong (a configuration error), and setting every reading aside would be wrong.
        """
        rejected: list[tuple[str, str]] = []
        for line in lines:
            failure = await self.endpoint.post(client, [line])
            if failure is not None and failure.status not in _REJECTED:
                return failure
            if failure is not None:
                rejected.append((line, failure.reason))
        if rejected:
            request_fault = await self.endpoint.post(client, [])
            if request_fault is not None:
                return request_fault
        for line, reason in rejected:
            await self.store.set_aside(reading_id, reason, line)
        await self._delivered([reading_id], len(lines) - len(rejected))
        return None

    async def _delivered(self, ids: list[int], points: int) -> None:
        await self.store.acknowledge(ids)
        self.points_written += points
        self.batches_written += 1
        self.last_write = datetime.now(UTC)
        self.health.ok(detail=f"{self.points_written} points written")

    def _report(self, failure: _Failure) -> None:
        if failure.reason != self.last_error:
            log.warning("InfluxDB write failed, readings kept in the local store: %s", failure.reason)
        self.last_error = failure.reason
        self.health.fail(failure.reason, State.DEGRADED, detail="readings are kept in the local store")


async def push_once(settings: Settings, reading: Reading) -> None:
    """Write one reading straight to InfluxDB (for `poll`, which has no store); raise on failure."""
    endpoint = InfluxEndpoint(settings)
    lines = reading_lines(reading, endpoint.measurement)
    if not lines:
        return
    async with endpoint.client(settings) as client:
        failure = await endpoint.post(client, lines)
    if failure is not None:
        raise InfluxWriteError(failure.reason)


def _server_message(response: httpx.Response) -> str:
    """InfluxDB's own words: `error` (1.x) or `message` (2.x), else the body's start."""
    text = response.text
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("error") or data.get("message") or text)
    return _one_line(text)[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _one_line(text: str) -> str:
    return " ".join(text.split())
