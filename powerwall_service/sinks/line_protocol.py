"""InfluxDB line protocol from Readings, escaped so that any site name or alert text survives.

Written here rather than taken from influxdb-client's Point because Point gets two cases wrong
that matter for user-chosen site names: it writes a newline in a tag as the two characters `\\n`,
and it emits a tag value ending in a backslash, which escapes the separator after it and makes
InfluxDB reject the whole point. The rules below were checked against InfluxDB 1.6.7 and are
property-tested through it (tests/unit/test_line_protocol.py, tests/integration/):

* measurement, tag keys, tag values, field keys: `,` and ` ` (and `=` except in the measurement)
  are preceded by a backslash; a backslash stays as it is, because InfluxDB takes `\\,` `\\ `
  `\\=` as the escape and leaves every other backslash literal.
* a newline or carriage return in those names becomes a space: a line cannot hold one.
* a tag value cannot end in a backslash (it would escape the separator), so trailing backslashes
  are dropped; a tag whose value is then empty is left out, which is how InfluxDB stores an
  empty tag anyway.
* string field values: `\\` and `"` are escaped; newlines are kept (InfluxDB accepts them
  inside quotes and returns them intact).
* a float that is NaN or infinite has no line-protocol form and is left out (unknown, not 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from powerwall_service.reading import FieldValue, Reading

_NEWLINES = str.maketrans({"\n": " ", "\r": " "})
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


def battery_measurement(measurement: str) -> str:
    """Per-Powerwall points go to `<measurement>_battery`, tagged with the serial."""
    return f"{measurement}_battery"


def reading_lines(reading: Reading, measurement: str) -> list[str]:
    """The site point and one point per Powerwall, all at the reading's own time (ns)."""
    ts = reading.timestamp_ns
    lines = [point_line(measurement, {"site": reading.site}, reading.fields, ts)]
    lines += [
        point_line(battery_measurement(measurement), {"site": reading.site, "serial": serial}, values, ts)
        for serial, values in sorted(reading.units.items())
    ]
    return [line for line in lines if line is not None]


def point_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp_ns: int
) -> str | None:
    """One line, or None when no field has a value line protocol can carry."""
    field_text = ",".join(
        f"{escape_key(key)}={value}"
        for key, value in ((key, field_value(raw)) for key, raw in fields.items())
        if value is not None
    )
    if not field_text:
        return None
    tag_text = "".join(
        f",{escape_key(key)}={tag}"
        for key, tag in ((key, tag_value(value)) for key, value in sorted(tags.items()))
        if tag
    )
    return f"{escape_measurement(measurement)}{tag_text} {field_text} {timestamp_ns}"


def escape_measurement(name: str) -> str:
    return name.translate(_NEWLINES).translate(_MEASUREMENT)


def escape_key(name: str) -> str:
    return name.translate(_NEWLINES).translate(_KEY)


def tag_value(value: str) -> str:
    """The escaped tag value; empty when nothing is left (the tag is then left out)."""
    return value.translate(_NEWLINES).rstrip("\\").translate(_KEY)


def stored_tag_value(value: str) -> str:
    """What InfluxDB stores for a tag value given to this module (for tests and docs)."""
    return value.translate(_NEWLINES).rstrip("\\")


def field_value(value: FieldValue) -> str | None:
    """Typed field text; bool is tested before int because bool is an int in Python."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return f'"{value.translate(_STRING)}"'
