"""The serializer's rules, exactly as InfluxDB reads them (the round trip through a real InfluxDB 1.x
is in tests/integration/test_influx_writer.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from powerwall_service.reading import Reading
from powerwall_service.sinks.line_protocol import field_value, point_line, reading_lines, tag_value

TS = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TS_NS = 1767323045678901000


def test_types_are_kept_and_bool_is_not_an_int() -> None:
    line = point_line(
        "powerwall", {"site": "home"}, {"on": True, "off": False, "n": 3, "x": 2.0, "s": "UP"}, 1
    )
    assert line == 'powerwall,site=home on=true,off=false,n=3i,x=2.0,s="UP" 1'


def test_reading_gives_site_point_and_one_point_per_powerwall_at_its_own_nanosecond() -> None:
    reading = Reading(TS, "home", {"p": 1.5}, {"SN2": {"soe": 50.0}, "SN1": {"soe": 40.0}})
    assert reading_lines(reading, "pw") == [
        f"pw,site=home p=1.5 {TS_NS}",
        f"pw_battery,serial=SN1,site=home soe=40.0 {TS_NS}",
        f"pw_battery,serial=SN2,site=home soe=50.0 {TS_NS}",
    ]


@pytest.mark.parametrize(
    ("site", "written"),
    [
        ("Home/Garage", "Home/Garage"),
        ("my home, east=1", r"my\ home\,\ east\=1"),
        ('quote"d', 'quote"d'),
        ("back\\slash", "back\\slash"),
        ("a\\,b", "a\\\\,b"),
        ("line1\nline2\r", r"line1\ line2\ "),
        ("ends\\\\", "ends"),
        ("Zuhause ☀ é", r"Zuhause\ ☀\ é"),
    ],
)
def test_tag_values_are_escaped_the_way_influxdb_reads_them(site: str, written: str) -> None:
    assert tag_value(site) == written


def test_an_empty_site_leaves_the_tag_out() -> None:
    assert point_line("pw", {"site": "\\"}, {"p": 1.0}, 7) == "pw p=1.0 7"


def test_string_fields_escape_quotes_and_backslashes_and_keep_newlines() -> None:
    assert field_value('grid "down"\nC:\\path\\') == '"grid \\"down\\"\nC:\\\\path\\\\"'


def test_a_non_finite_float_is_left_out_and_a_point_without_fields_is_none() -> None:
    assert point_line("pw", {"site": "h"}, {"a": float("nan"), "b": 1.0}, 1) == "pw,site=h b=1.0 1"
    assert point_line("pw", {"site": "h"}, {"a": float("inf")}, 1) is None


def test_measurement_and_field_keys_are_escaped() -> None:
    assert point_line("my pw,x=1", {}, {"a b": 1, "c=d,e": 2}, 1) == r"my\ pw\,x=1 a\ b=1i,c\=d\,e=2i 1"
