"""The local store on a real disk: durable, ordered, one process at a time, honest about failures."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powerwall_service.health import Component, State
from powerwall_service.history import HistoryQuery
from powerwall_service.reading import FieldValue, Reading
from powerwall_service.sinks.store import AsyncStore, Store, StoreClockError, StoreError, StoreLockedError
from tests.fixtures.processes import PYTHON, ManagedProcess, clean_env

NOW = datetime.now(UTC).replace(microsecond=0)


def reading(at: datetime, i: int = 0, text: str = "") -> Reading:
    fields: dict[str, FieldValue] = {
        "battery_percentage": 50.0 + i,
        "alerts_count": i,
        "grid_connected": i % 2 == 0,
    }
    if text:
        fields["alerts"] = text
    return Reading(at, "home", fields, {"SN1": {"battery_soe": 10.0 * i}})


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Callable[..., Store]]:
    stores: list[Store] = []

    def open_store(
        path: Path | None = None, retention_days: float = 7, max_mb: float = 100, influx: bool = True
    ) -> Store:
        store = Store(path or tmp_path / "store.db", retention_days, max_mb, influx)
        store.open()
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


def test_readings_survive_a_reopen_in_order_and_leave_the_outbox_when_acknowledged(
    opened: Callable[..., Store],
) -> None:
    store = opened()
    kept = [reading(NOW + timedelta(seconds=i), i) for i in range(5)]
    ids = [store.append(r) for r in kept]
    assert ids == sorted(ids)
    store.close()
    store = opened()
    assert store.pending(10) == list(zip(ids, kept, strict=True))
    store.acknowledge(ids[:3])
    assert [r for _, r in store.pending(10)] == kept[3:]
    assert store.latest() == kept[-1]
    status = store.status()
    assert (status.readings, status.outbox_depth, status.set_aside) == (5, 2, 0)
    assert status.oldest_unsent_age_seconds is not None


def test_a_reading_not_after_the_last_is_held_back_even_after_a_restart(opened: Callable[..., Store]) -> None:
    store = opened()
    store.append(reading(NOW))
    with pytest.raises(StoreClockError, match="not after the last stored reading"):
        store.append(reading(NOW))
    store.close()
    store = opened()
    with pytest.raises(StoreClockError, match="held back"):
        store.append(reading(NOW - timedelta(hours=1)))
    assert store.status().readings == 1


HOLDER = """
import sys, time
from powerwall_service.sinks.store import Store
store = Store(sys.argv[1], 7, 100, True)
store.open()
print("holding", flush=True)
time.sleep(600)
"""


def test_a_second_process_is_refused_until_the_first_dies_even_by_sigkill(
    tmp_path: Path, process_factory: Callable[..., ManagedProcess]
) -> None:
    path = tmp_path / "store.db"
    holder = process_factory("holder", [PYTHON, "-c", HOLDER, str(path)], env=clean_env())
    holder.wait_until(lambda: "holding" in holder.log())
    second = Store(path, 7, 100, True)
    with pytest.raises(
        StoreLockedError, match=rf"store {path} is in use by another process \(pid {holder.pid}\)"
    ):
        second.open()
    holder.kill9()
    second.open()
    second.close()


def test_the_refusal_reaches_a_second_serve_as_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = Store(path, 7, 100, True)
    first.open()
    try:
        code = "import asyncio, sys\nfrom powerwall_service.sinks.store import AsyncStore, Store\n"
        code += "asyncio.run(AsyncStore(Store(sys.argv[1], 7, 100, True)).open())"
        result = subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, timeout=30)
    finally:
        first.close()
    assert result.returncode == 1
    assert f"StoreLockedError: store {path} is in use by another process" in result.stderr


def test_retention_never_deletes_what_influxdb_has_not_acknowledged(opened: Callable[..., Store]) -> None:
    store = opened(retention_days=7, influx=True)
    old = [store.append(reading(NOW - timedelta(days=10, seconds=-i), i)) for i in range(4)]
    new = store.append(reading(NOW, 9))
    store.acknowledge(old[:2])
    assert store.prune() == 2
    assert [i for i, _ in store.pending(10)] == [*old[2:], new]
    assert store.status().readings == 3


def test_without_influxdb_retention_deletes_by_age_and_a_later_influxdb_gets_the_rest(
    tmp_path: Path, opened: Callable[..., Store]
) -> None:
    path = tmp_path / "store.db"
    store = opened(path, retention_days=7, influx=False)
    for i in range(3):
        store.append(reading(NOW - timedelta(days=10, seconds=-i), i))
    recent = [reading(NOW + timedelta(seconds=i), i) for i in range(2)]
    for r in recent:
        store.append(r)
    assert store.status().outbox_depth is None
    assert store.prune() == 3
    store.close()
    store = opened(path, retention_days=7, influx=True)
    assert [r for _, r in store.pending(10)] == recent
    assert store.status().outbox_depth == 2


def test_the_size_cap_deletes_the_oldest_first_and_logs_and_counts_it(
    opened: Callable[..., Store], caplog: pytest.LogCaptureFixture
) -> None:
    store = opened(max_mb=0.25)
    caplog.set_level(logging.WARNING)
    ids = [store.append(reading(NOW + timedelta(seconds=i), i, text="x" * 1000)) for i in range(400)]
    status = store.status()
    assert 0 < status.readings < 400
    assert status.dropped_for_size == 400 - status.readings
    assert [i for i, _ in store.pending(1000)] == ids[-status.readings :]
    assert "Store over STORE_MAX_MB" in caplog.text
    assert "never sent to InfluxDB" in caplog.text


async def test_a_corrupt_store_is_reported_and_polling_can_go_on(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not an SQLite database at all" * 200)
    health = Component("store")
    store = AsyncStore(Store(path, 7, 100, True), health)
    await store.open()
    view = health.view()
    assert view.state is State.DOWN
    assert f"store {path}" in (view.last_error or "")
    assert "not a database" in (view.last_error or "")
    with pytest.raises(StoreError):
        await store.append(reading(NOW))
    await store.close()


async def test_a_store_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    health = Component("store")
    store = AsyncStore(Store(blocker / "store.db", 7, 100, True), health)
    await store.open()
    assert health.view().state is State.DOWN
    assert "cannot be opened" in (health.view().last_error or "")
    await store.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), so the store meets a genuinely full disk."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


async def test_a_full_disk_is_reported_and_what_was_stored_stays(tiny_disk: Path) -> None:
    health = Component("store")
    store = AsyncStore(Store(tiny_disk / "store.db", 7, 100, True), health)
    await store.open()
    stored = 0
    try:
        with pytest.raises(StoreError, match="full"):  # noqa: PT012 - appends until the disk is full
            for i in range(10_000):
                await store.append(reading(NOW + timedelta(seconds=i), i, text=str(i) * 300))
                stored += 1
        assert stored > 10
        assert health.view().state is State.DOWN
        assert "full" in (health.view().last_error or "")
        assert len(await store.pending(100_000)) == stored
    finally:
        await store.close()


async def test_history_answers_from_stored_readings_with_their_types(tmp_path: Path) -> None:
    store = AsyncStore(Store(tmp_path / "store.db", 7, 100, True))
    await store.open()
    start = NOW - timedelta(minutes=10)
    for i in range(6):
        await store.append(reading(start + timedelta(seconds=10 * i), i, text=f"alert {i}" if i else ""))
    names = ["battery_percentage", "alerts_count", "alerts"]
    raw = await store.history(HistoryQuery.build(names, start, start + timedelta(seconds=30), None))
    assert raw["series"]["battery_percentage"] == [
        {"time": (start + timedelta(seconds=10 * i)).isoformat(), "value": 50.0 + i} for i in range(3)
    ]
    counts = [p["value"] for p in raw["series"]["alerts_count"]]
    assert counts == [0, 1, 2]
    assert all(type(value) is int for value in counts)
    assert [p["value"] for p in raw["series"]["alerts"]] == ["alert 1", "alert 2"]
    averaged = await store.history(
        HistoryQuery.build(["battery_percentage"], start, start + timedelta(minutes=1), 20.0)
    )
    assert [(p["value"], p["count"]) for p in averaged["series"]["battery_percentage"]] == [
        (50.5, 2),
        (52.5, 2),
        (54.5, 2),
    ]
    await store.close()


if sys.platform != "linux":  # pragma: no cover - the lock and tmpfs tests are Linux facts
    pytestmark = pytest.mark.skip("Linux only")


async def test_retention_runs_by_itself_when_the_service_appends(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path, 7, 100, influx_configured=False)
    store.open()
    for i in range(3):
        store.append(reading(NOW - timedelta(days=8, seconds=-i), i))
    store.close()
    service_store = AsyncStore(Store(path, 7, 100, influx_configured=False))
    await service_store.open()
    await service_store.append(reading(NOW))
    assert (await service_store.status()).readings == 1
    await service_store.close()
