"""The local store: every reading on disk before any network write; InfluxDB's outbox and the history.

SQLite in WAL mode with synchronous=FULL, so a reading `append` returned for survives a power cut
or a SIGKILL. Each row carries a delivery state. A reading is `unsent` until InfluxDB acknowledges
it (`sent`) or rejects a point of it for good (`set aside`, with the server's reason). Retention
(STORE_RETENTION_DAYS) deletes old readings, but while InfluxDB is configured never an unsent one:
only the size cap (STORE_MAX_MB) may, oldest first, and each such loss is logged and counted.
Without InfluxDB configured, unsent readings are pending for no one, so retention deletes them by
age like any other; when InfluxDB is configured later it receives every unsent reading still kept.

One process at a time: an exclusive flock on `<store>.lock`, which the kernel releases however the
holder dies. `Store` is blocking and thread-safe; `AsyncStore` runs every call on one dedicated
thread, so the event loop never waits on the disk, and reports into the `store` health component.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from powerwall_service.health import Component, State
from powerwall_service.reading import FieldValue, Reading

if TYPE_CHECKING:
    from powerwall_service.config import Settings
    from powerwall_service.history import HistoryQuery

log = logging.getLogger(__name__)

T = TypeVar("T")

UNSENT, SENT, SET_ASIDE = 0, 1, 2
SIZE_TARGET = 0.98
"""The size cap deletes down to this fraction of STORE_MAX_MB, so it does not run on every append."""
REOPEN_INTERVAL_S = 30.0
"""How often a store that could not be opened is tried again."""
PRUNE_INTERVAL_S = 600.0
"""How often `AsyncStore.append` applies retention (the size cap is checked on every append)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts_ns);
CREATE INDEX IF NOT EXISTS readings_unsent ON readings (id) WHERE state = 0;
CREATE TABLE IF NOT EXISTS set_aside (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reading_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    point TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreError(Exception):
    """The store cannot do its job (corrupt, full, unwritable); the message says why."""


class StoreLockedError(StoreError):
    """Another process has the store open."""


class StoreClockError(StoreError):
    """A reading is not later than the last stored one (a clock not yet set); it was not stored."""


@dataclass(frozen=True, slots=True)
class SetAsidePoint:
    """A point InfluxDB rejected for good, kept with the server's reason and not retried."""

    reading_id: int
    timestamp: datetime
    point: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The store's numbers for /status and /metrics. `outbox_depth` is None without InfluxDB."""

    readings: int
    outbox_depth: int | None
    oldest_unsent_age_seconds: float | None
    set_aside: int
    dropped_for_size: int
    db_bytes: int

    def as_dict(self) -> dict[str, int | float | None]:
        return asdict(self)

    def as_metrics(self) -> dict[str, int | float | None]:
        return asdict(self)


class Store:
    """The blocking store. Every method is safe from any thread (one lock, one connection)."""

    def __init__(
        self, path: Path | str, retention_days: float, max_mb: float, influx_configured: bool
    ) -> None:
        self.path = Path(path)
        self.retention = timedelta(days=retention_days)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.influx_configured = influx_configured
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._last_ts_ns: int | None = None

    def open(self) -> None:
        """Take the process lock, then open (or create) the database and check it."""
        self._lock_fd = _take_lock(self.path)
        try:
            self._db = self._connect()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def append(self, reading: Reading) -> int:
        """Store a reading durably and return its id; refuse one that is not after the last."""
        ts_ns = reading.timestamp_ns
        with self._transaction() as db:
            if self._last_ts_ns is not None and ts_ns <= self._last_ts_ns:
                raise StoreClockError(
                    f"reading at {reading.timestamp.isoformat()} is not after the last stored reading "
                    f"at {_iso(self._last_ts_ns)} (clock not set yet?): held back, not stored"
                )
            cursor = db.execute(
                "INSERT INTO readings (ts_ns, body) VALUES (?, ?)", (ts_ns, reading.to_json())
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_ts_ns', ?)", (ts_ns,))
            self._enforce_size(db)
            reading_id = cursor.lastrowid
        self._last_ts_ns = ts_ns
        assert reading_id is not None
        return reading_id

    def pending(self, limit: int) -> list[tuple[int, Reading]]:
        """The oldest unsent readings, in the order they were stored."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, body FROM readings WHERE state = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(row_id, Reading.from_json(body)) for row_id, body in rows]

    def acknowledge(self, ids: Sequence[int]) -> None:
        """InfluxDB has these readings: they leave the outbox (and become subject to retention)."""
        with self._transaction() as db:
            db.executemany("UPDATE readings SET state = 1 WHERE id = ? AND state = 0", [(i,) for i in ids])

    def set_aside(self, reading_id: int, reason: str, point: str) -> None:
        """InfluxDB rejected `point` of this reading for good: keep it with the reason, stop retrying."""
        with self._transaction() as db:
            row = db.execute("SELECT ts_ns FROM readings WHERE id = ?", (reading_id,)).fetchone()
            if row is None:
                return
            db.execute("UPDATE readings SET state = 2 WHERE id = ?", (reading_id,))
            db.execute(
                "INSERT INTO set_aside (reading_id, ts_ns, point, reason, at_ns) VALUES (?, ?, ?, ?, ?)",
                (reading_id, row[0], point, reason, time.time_ns()),
            )
        log.warning("InfluxDB rejected a point of reading %d, set aside: %s", reading_id, reason)

    def set_aside_points(self) -> list[SetAsidePoint]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT reading_id, ts_ns, point, reason, at_ns FROM set_aside ORDER BY id"
            ).fetchall()
        return [SetAsidePoint(r[0], _dt(r[1]), r[2], r[3], _dt(r[4])) for r in rows]

    def latest(self) -> Reading | None:
        with self._transaction() as db:
            row = db.execute("SELECT body FROM readings ORDER BY id DESC LIMIT 1").fetchone()
        return Reading.from_json(row[0]) if row else None

    def readings_between(self, metrics: Sequence[str], since: datetime, until: datetime) -> list[Reading]:
        """Readings in [since, until) holding only the named site fields, oldest first.

        The fields are picked out by SQLite's JSON functions, so a week of history does not decode
        every stored reading in Python. A reading holding none of them is left out.
        """
        paths = [f"$.fields.{json.dumps(name)}" for name in metrics]
        columns = ", ".join("json_extract(body, ?), json_type(body, ?)" for _ in paths)
        params: list[Any] = [p for path in paths for p in (path, path)]
        params += [_ns(since), _ns(until)]
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT ts_ns, {columns} FROM readings WHERE ts_ns >= ? AND ts_ns < ? ORDER BY ts_ns",  # noqa: S608 - placeholders only
                params,
            ).fetchall()
        readings = []
        for row in rows:
            fields: dict[str, FieldValue] = {}
            for index, name in enumerate(metrics):
                value = _json_value(row[1 + 2 * index], row[2 + 2 * index])
                if value is not None:
                    fields[name] = value
            if fields:
                readings.append(Reading(timestamp=_dt(row[0]), site="", fields=fields))
        return readings

    def status(self) -> StoreStatus:
        with self._transaction() as db:
            readings = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            unsent, oldest = db.execute(
                "SELECT count(*), min(ts_ns) FROM readings WHERE state = 0"
            ).fetchone()
            set_aside = db.execute("SELECT count(*) FROM set_aside").fetchone()[0]
            dropped = _meta(db, "dropped_for_size")
        configured = self.influx_configured
        return StoreStatus(
            readings=readings,
            outbox_depth=unsent if configured else None,
            oldest_unsent_age_seconds=(time.time_ns() - oldest) / 1e9 if configured and oldest else None,
            set_aside=set_aside,
            dropped_for_size=dropped,
            db_bytes=sum(_file_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal")),
        )

    def prune(self) -> int:
        """Apply retention and the size cap; returns how many readings were deleted."""
        cutoff = time.time_ns() - int(self.retention.total_seconds() * 1e9)
        unsent_kept = " AND state != 0" if self.influx_configured else ""
        with self._transaction() as db:
            deleted = db.execute(
                f"DELETE FROM readings WHERE ts_ns < ?{unsent_kept}",  # noqa: S608 - a constant clause
                (cutoff,),
            ).rowcount
            db.execute("DELETE FROM set_aside WHERE at_ns < ?", (cutoff,))
            deleted += self._enforce_size(db)
        with self._transaction() as db:
            db.execute("PRAGMA incremental_vacuum")
        if deleted:
            log.info(
                "Store pruned %d readings (retention %s, cap %d bytes)",
                deleted,
                self.retention,
                self.max_bytes,
            )
        return deleted

    def _enforce_size(self, db: sqlite3.Connection) -> int:
        """Delete the oldest readings, sent or not, until the used pages fit under the cap."""
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        deleted = 0
        for _ in range(50):
            used = _used_bytes(db, page_size)
            if used <= self.max_bytes:
                break
            count = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            if count <= 1:
                break
            excess = used - self.max_bytes * SIZE_TARGET
            batch = min(count - 1, max(1, math.ceil(excess / (used / count))))
            first, last, unsent = db.execute(
                "SELECT min(ts_ns), max(ts_ns), sum(state = 0) FROM "
                "(SELECT ts_ns, state FROM readings ORDER BY id LIMIT ?)",
                (batch,),
            ).fetchone()
            db.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)", (batch,)
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('dropped_for_size', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (batch,),
            )
            deleted += batch
            log.warning(
                "Store over STORE_MAX_MB (%d bytes): deleted the %d oldest readings (%s to %s, %d never "
                "sent to InfluxDB)",
                self.max_bytes,
                batch,
                _iso(first),
                _iso(last),
                unsent if self.influx_configured else 0,
            )
        return deleted

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path} cannot be opened: {exc}") from exc
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"store {self.path} is corrupt: {check}")
            last = db.execute("SELECT value FROM meta WHERE key = 'last_ts_ns'").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"store {self.path} is unusable: {exc}") from exc
        except StoreError:
            db.close()
            raise
        self._last_ts_ns = last[0] if last else None
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; any SQLite failure becomes a StoreError naming the store."""
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"store {self.path} is not open")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"store {self.path} failed: {exc}") from exc


class AsyncStore:
    """The store for the event loop: every call on one thread, outcomes reported to health.

    Retention runs by itself after the first append and then every PRUNE_INTERVAL_S.

    A store that cannot be opened (corrupt, unwritable) does not stop the service: it is reported
    DOWN and tried again at most every REOPEN_INTERVAL_S on the next call. Only another process
    holding it (StoreLockedError) is fatal, because two services would fight over one outbox.
    """

    def __init__(self, store: Store, health: Component | None = None) -> None:
        self.store = store
        self.health = health
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._next_open = 0.0
        self._next_prune = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, health: Component | None = None) -> AsyncStore:
        store = Store(
            settings.store_path, settings.store_retention_days, settings.store_max_mb, settings.influx_enabled
        )
        return cls(store, health)

    async def open(self) -> None:
        """Open the store; raises StoreLockedError only, any other failure is reported and retried."""
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def append(self, reading: Reading) -> int:
        return await self._run(self._append, reading)

    async def pending(self, limit: int) -> list[tuple[int, Reading]]:
        return await self._run(self._ensure_open, self.store.pending, limit)

    async def acknowledge(self, ids: Sequence[int]) -> None:
        await self._run(self._ensure_open, self.store.acknowledge, ids)

    async def set_aside(self, reading_id: int, reason: str, point: str) -> None:
        await self._run(self._ensure_open, self.store.set_aside, reading_id, reason, point)

    async def set_aside_points(self) -> list[SetAsidePoint]:
        return await self._run(self._ensure_open, self.store.set_aside_points)

    async def latest(self) -> Reading | None:
        return await self._run(self._ensure_open, self.store.latest)

    async def status(self) -> StoreStatus:
        return await self._run(self._ensure_open, self.store.status)

    async def prune(self) -> int:
        return await self._run(self._ensure_open, self.store.prune)

    async def history(self, query: HistoryQuery) -> dict[str, Any]:
        """The /history answer, computed on the store's thread (it can be many rows)."""
        return await self._run(self._history, query)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _history(self, query: HistoryQuery) -> dict[str, Any]:
        readings = self._ensure_open(self.store.readings_between, query.metrics, query.since, query.until)
        return query.answer(readings)

    def _open(self) -> None:
        try:
            self.store.open()
        except StoreLockedError:
            raise
        except StoreError as exc:
            self._next_open = time.monotonic() + REOPEN_INTERVAL_S
            self._report(exc)
            log.error("%s; polling goes on without the local store", exc)
        else:
            if self.health is not None:
                self.health.ok(detail=str(self.store.path))

    def _ensure_open(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.store.is_open and time.monotonic() >= self._next_open:
            self._open()
        try:
            return fn(*args)
        except StoreClockError:
            raise
        except StoreError as exc:
            self._report(exc)
            raise

    def _append(self, reading: Reading) -> int:
        try:
            reading_id = self._ensure_open(self.store.append, reading)
        except StoreClockError as exc:
            if self.health is not None:
                self.health.fail(str(exc), State.DEGRADED)
            raise
        if self.health is not None:
            self.health.ok(detail=str(self.store.path))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
            with contextlib.suppress(StoreError):
                self._ensure_open(self.store.prune)
        return reading_id

    def _report(self, exc: StoreError) -> None:
        if self.health is not None:
            self.health.fail(str(exc), State.DOWN)


def _take_lock(path: Path) -> int:
    """An exclusive flock on `<store>.lock`, holding the owner's pid for the error message."""
    lock_path = Path(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"store {path} cannot be opened: {exc.strerror} ({lock_path})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"store {path} is in use by another process (pid {holder}): is another `serve` running "
            "with the same STORE_PATH?"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _used_bytes(db: sqlite3.Connection, page_size: int) -> int:
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def _meta(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _json_value(value: Any, kind: str | None) -> FieldValue | None:
    """SQLite's json_extract gives 1/0 for true/false; json_type tells them from integers."""
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("integer", "real", "text"):
        return value  # type: ignore[no-any-return]
    return None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _ns(moment: datetime) -> int:
    return Reading(timestamp=moment, site="", fields={}).timestamp_ns


def _dt(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC) + timedelta(
        microseconds=ts_ns % 1_000_000_000 // 1000
    )


def _iso(ts_ns: int | None) -> str:
    return _dt(ts_ns).isoformat() if ts_ns is not None else "?"
