"""The Reading: one successful poll, flattened into the typed fields every sink writes.

The catalogue turns a Snapshot into a Reading; the store keeps Readings; InfluxDB, MQTT and
Prometheus all write from them. A field that is unknown is absent, never zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Reading:
    """A poll's values as named by the catalogue, with the time the gateway was read.

    `fields` belong to the site as a whole; `units` holds each Powerwall's own fields keyed by
    its serial number. Python types carry the catalogue's types (a float stays a float even when
    it is whole), so a reading serialised today and re-sent next week is byte-identical.
    """

    timestamp: datetime
    site: str
    fields: Mapping[str, FieldValue]
    units: Mapping[str, Mapping[str, FieldValue]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("Reading.timestamp must be timezone-aware")

    @property
    def timestamp_ns(self) -> int:
        """Nanoseconds since the epoch, exact (no float rounding)."""
        ts = self.timestamp.astimezone(UTC)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        delta = ts - epoch
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000

    def to_json(self) -> str:
        """Serialise for the store; `from_json` gives back an equal Reading."""
        return json.dumps(
            {
                "timestamp": self.timestamp.astimezone(UTC).isoformat(),
                "site": self.site,
                "fields": dict(self.fields),
                "units": {serial: dict(values) for serial, values in self.units.items()},
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Reading:
        data: dict[str, Any] = json.loads(text)
        return cls(
            timestamp=datetime.fromisoformat(data["timestamp"]),
            site=data["site"],
            fields=data["fields"],
            units=data.get("units", {}),
        )
