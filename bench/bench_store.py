"""Benchmark of the local store, printed as ratios against baselines measured in the same run.

    .venv/bin/python bench/bench_store.py [--readings N]

* append (JSON + insert + clock check + size check + fsync) vs a plain SQLite insert of the same
  text with the same durability (WAL, synchronous=FULL, one transaction per row);
* draining the outbox (pending 200 + acknowledge) vs a plain SELECT of the same rows;
* a history query of 3 metrics over every stored reading vs decoding every row's JSON in Python.

Absolute times depend on the disk; the ratios say what the store's own work costs.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from powerwall_service.reading import FieldValue, Reading
from powerwall_service.sinks.store import Store


def sample(i: int, start: datetime) -> Reading:
    """A reading about the size of a real one: ~60 site fields and two Powerwalls."""
    fields: dict[str, FieldValue] = {f"metric_{k}_w": 1000.0 + k + i for k in range(55)}
    fields |= {"alerts_count": 2, "grid_status": "UP", "alerts": "SystemConnectedToGrid;FWUpdateSucceeded"}
    units = {f"TG12345678{u}": {"battery_soe": 50.0 + u, "battery_capacity_wh": 13500.0} for u in range(2)}
    return Reading(start + timedelta(seconds=5 * i), "home", fields, units)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=2000)
    n = parser.parse_args().readings
    start = datetime.now(UTC) - timedelta(seconds=5 * n)
    warm_up = [sample(i, start - timedelta(days=1)) for i in range(100)]
    readings = [sample(i, start) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        plain = sqlite3.connect(Path(tmp) / "plain.db", isolation_level=None)
        plain.execute("PRAGMA journal_mode = WAL")
        plain.execute("PRAGMA synchronous = FULL")
        plain.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, ts_ns INTEGER, body TEXT)")

        def plain_inserts() -> None:
            for r in readings:
                plain.execute("INSERT INTO r (ts_ns, body) VALUES (?, ?)", (r.timestamp_ns, r.to_json()))

        store = Store(Path(tmp) / "store.db", 7, 500, influx_configured=True)
        store.open()

        def appends() -> None:
            for r in readings:
                store.append(r)

        for r in warm_up:  # both files exist and have their WAL before anything is timed
            plain.execute("INSERT INTO r (ts_ns, body) VALUES (?, ?)", (r.timestamp_ns, r.to_json()))
            store.append(r)
        base_insert = timed(plain_inserts)
        append = timed(appends)

        def plain_drain() -> None:
            last = 0
            while rows := plain.execute(
                "SELECT id, body FROM r WHERE id > ? ORDER BY id LIMIT 200", (last,)
            ).fetchall():
                [Reading.from_json(body) for _, body in rows]
                last = rows[-1][0]

        def drain() -> None:
            while batch := store.pending(200):
                store.acknowledge([i for i, _ in batch])

        base_drain = timed(plain_drain)
        drained = timed(drain)
        metrics = ["metric_1_w", "alerts_count", "grid_status"]

        def python_history() -> None:
            for (body,) in plain.execute("SELECT body FROM r ORDER BY ts_ns"):
                data = json.loads(body)["fields"]
                [data.get(m) for m in metrics]

        base_history = timed(python_history)
        history = timed(
            lambda: store.readings_between(metrics, start - timedelta(days=2), start + timedelta(days=365))
        )
        size = store.status().db_bytes
        store.close()
        plain.close()

    print(f"readings: {n} (+100 warm-up), store size {size / (n + 100):.0f} bytes per reading (with WAL)")
    print(
        f"append + fsync:  {append / n * 1e3:.3f} ms per reading = {append / base_insert:.2f}x a plain "
        f"durable SQLite insert ({base_insert / n * 1e3:.3f} ms)"
    )
    print(
        f"outbox drain:    {drained / n * 1e6:.1f} us per reading = {drained / base_drain:.2f}x a plain "
        f"SELECT + decode ({base_drain / n * 1e6:.1f} us)"
    )
    print(
        f"history query:   {history / n * 1e6:.1f} us per reading = {history / base_history:.2f}x decoding "
        f"every row in Python ({base_history / n * 1e6:.1f} us)"
    )


if __name__ == "__main__":
    main()
