"""Local history for GET /history: stored readings of named metrics over a range, raw or averaged.

Users without InfluxDB get their data from the service itself. A value missing from a reading is
skipped, never counted as 0, and a bucket without any value is left out rather than shown as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from powerwall_service.catalogue import UnknownMetricError, metric
from powerwall_service.reading import Reading

MAX_POINTS = 10_000
"""The most points per metric one answer may hold (a week of 5 s readings needs a step)."""


EARLIEST = datetime(1678, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)
"""Readings are kept with 64-bit nanosecond times; a range reaching beyond them is cut to them."""


class HistoryError(ValueError):
    """A history request that cannot be answered; the message says why."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    metrics: tuple[str, ...]
    since: datetime
    until: datetime
    step: float | None

    @classmethod
    def build(
        cls, names: Sequence[str], since: datetime, until: datetime, step: float | None
    ) -> HistoryQuery:
        """Validate the request: known metrics, a forward range, averages only of numbers."""
        since, until = _utc(since), _utc(until)
        if step is not None and not math.isfinite(step):
            raise HistoryError("step must be a finite number of seconds")
        if until <= since:
            raise HistoryError("until must be after since")
        since, until = min(max(since, EARLIEST), LATEST), min(max(until, EARLIEST), LATEST)
        for name in names:
            try:
                definition = metric(name)
            except UnknownMetricError:
                raise HistoryError(f"unknown metric {name!r} (see docs/metrics.md)") from None
            if step is not None and definition.kind not in (float, int):
                raise HistoryError(f"metric {name!r} is not a number and cannot be averaged: leave out step")
        if step is not None and (until - since).total_seconds() / step > MAX_POINTS:
            raise HistoryError(f"the range holds more than {MAX_POINTS} steps: use a larger step")
        return cls(tuple(dict.fromkeys(names)), since, until, step)

    def answer(self, readings: Iterable[Reading]) -> dict[str, Any]:
        """The JSON answer from the readings in [since, until), oldest first."""
        raw: dict[str, list[tuple[datetime, Any]]] = {name: [] for name in self.metrics}
        for reading in readings:
            for name in self.metrics:
                value = reading.fields.get(name)
                if value is not None:
                    raw[name].append((reading.timestamp, value))
        if self.step is None:
            for name, points in raw.items():
                if len(points) > MAX_POINTS:
                    raise HistoryError(
                        f"{name} has {len(points)} readings in the range, more than {MAX_POINTS}: "
                        "narrow the range or add step"
                    )
            series = {name: [_point(ts, value) for ts, value in points] for name, points in raw.items()}
        else:
            series = {name: self._averaged(points, self.step) for name, points in raw.items()}
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "step": self.step,
            "series": series,
        }

    def _averaged(self, points: list[tuple[datetime, Any]], step: float) -> list[dict[str, Any]]:
        buckets: dict[int, list[float]] = {}
        for ts, value in points:
            index = int((ts - self.since).total_seconds() // step)
            buckets.setdefault(index, []).append(float(value))
        return [
            {
                "time": (self.since + timedelta(seconds=index * step)).isoformat(),
                "value": sum(values) / len(values),
                "count": len(values),
            }
            for index, values in sorted(buckets.items())
        ]


def _point(ts: datetime, value: Any) -> dict[str, Any]:
    return {"time": ts.astimezone(UTC).isoformat(), "value": value}


def _utc(moment: datetime) -> datetime:
    """A time without an offset is taken as UTC."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise HistoryError(f"time {moment.isoformat()} is out of range") from None
