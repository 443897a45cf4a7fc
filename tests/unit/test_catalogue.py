"""The catalogue turns a Snapshot into the typed fields every sink writes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from powerwall_service import catalogue, docs
from powerwall_service.catalogue import (
    UnknownMetricError,
    metric,
    reading_from_snapshot,
    site_for,
    unit_metric,
)
from powerwall_service.config import parse_settings
from powerwall_service.reading import Reading
from powerwall_service.snapshot import Meter, PowerwallUnit, PVString, Snapshot

WHEN = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)

# The spec's service's field names and types (reference peers-and-user-asks.md §2.3), by hand.
SPEC_FIELDS: dict[str, type] = {
    "battery_percentage": float,
    "site_power_w": float,
    "solar_power_w": float,
    "battery_power_w": float,
    "load_power_w": float,
    "battery_nominal_energy_remaining_wh": float,
    "battery_nominal_full_energy_wh": float,
    "alerts_count": int,
    "alerts": str,
    "grid_status": str,
    "din": str,
    "string_a_voltage_v": float,
    "string_a_current_a": float,
    "string_a_power_w": float,
    "string_a_connected": bool,
    "string_a_state": str,
}
NEW_FIELDS: dict[str, type] = {
    "battery_percentage_app": float,
    "grid_status_code": int,
    "site_energy_imported_wh": float,
    "site_energy_exported_wh": float,
    "solar_energy_exported_wh": float,
    "battery_energy_imported_wh": float,
    "battery_energy_exported_wh": float,
    "load_energy_imported_wh": float,
    "site_voltage_v": float,
    "site_frequency_hz": float,
    "load_current_a": float,
    "backup_reserve_percent": float,
    "operation_mode": str,
    "firmware": str,
}
CORE = {"battery_percentage", "battery_percentage_app", "site_power_w", "solar_power_w"} | {
    "battery_power_w",
    "load_power_w",
}


def core_snapshot(**extra: object) -> Snapshot:
    return Snapshot(
        timestamp=WHEN,
        battery_percentage=80,  # whole numbers, as a gateway may send them
        battery_percentage_app=78.9473684,
        site_power_w=-1200,
        solar_power_w=4000.0,
        battery_power_w=-1500.0,
        load_power_w=1300.0,
        **extra,  # type: ignore[arg-type]
    )


def full_snapshot() -> Snapshot:
    return core_snapshot(
        site_name="Home",
        din="1232100-00-E--TG123",
        firmware="25.10.1",
        site_energy_imported_wh=1000,
        site_energy_exported_wh=2000.5,
        solar_energy_exported_wh=3000.0,
        battery_energy_imported_wh=4000.0,
        battery_energy_exported_wh=5000.0,
        load_energy_imported_wh=6000.0,
        meters={"site": Meter(voltage_v=240.1, current_a=5, frequency_hz=60.0), "load": Meter(current_a=5.4)},
        battery_nominal_energy_remaining_wh=10000,
        battery_nominal_full_energy_wh=13500.0,
        backup_reserve_percent=20,
        operation_mode="self_consumption",
        grid_status="UP",
        grid_status_code=1,
        alerts=("SystemConnectedToGrid", "FWUpdateSucceeded"),
        powerwalls={
            "TG100": PowerwallUnit(
                serial="TG100",
                part_number="1707000-11-J",
                nominal_energy_remaining_wh=5000,
                nominal_full_pack_energy_wh=13500.0,
                power_w=-750.0,
                temperature_c=None,
                state="BMS_Active",
            )
        },
        strings={
            "A": PVString(voltage_v=380, current_a=5.2, power_w=1976.0, connected=True, state="PV_Active"),
            "B1": PVString(voltage_v=None, current_a=0.0, power_w=0.0, connected=False, state=None),
        },
        temperatures={"TEPOD--1707000-11-J--TG100": 29.5},
    )


def test_spec_fields_keep_their_names_and_types() -> None:
    fields = reading_from_snapshot(full_snapshot(), "Home").fields
    for name, kind in {**SPEC_FIELDS, **NEW_FIELDS}.items():
        assert type(fields[name]) is kind, name


def test_whole_floats_stay_floats() -> None:
    fields = reading_from_snapshot(full_snapshot(), "Home").fields
    assert fields["battery_percentage"] == 80.0
    assert type(fields["battery_percentage"]) is float
    assert type(fields["site_power_w"]) is float
    assert type(fields["string_a_voltage_v"]) is float
    assert '"battery_percentage":80.0' in reading_from_snapshot(full_snapshot(), "Home").to_json()


def test_values_and_alerts() -> None:
    fields = reading_from_snapshot(full_snapshot(), "Home").fields
    assert fields["alerts"] == "SystemConnectedToGrid;FWUpdateSucceeded"
    assert fields["alerts_count"] == 2
    assert fields["grid_status"] == "UP"
    assert fields["grid_status_code"] == 1
    assert fields["site_voltage_v"] == 240.1
    assert fields["load_current_a"] == 5.4
    assert fields["battery_power_w"] == -1500.0
    assert fields["din"] == "1232100-00-E--TG123"


def test_unknown_values_are_absent_never_zero() -> None:
    fields = reading_from_snapshot(core_snapshot(), "Home").fields
    assert set(fields) == CORE
    full = reading_from_snapshot(full_snapshot(), "Home")
    assert "string_b1_voltage_v" not in full.fields
    assert "string_b1_state" not in full.fields
    assert full.fields["string_b1_current_a"] == 0.0
    assert "site_current_a" in full.fields
    assert "battery_voltage_v" not in full.fields
    assert "load_voltage_v" not in full.fields
    assert "temperature_c" not in full.units["TG100"]


def test_no_alerts_known_and_alerts_unknown_differ() -> None:
    none_active = reading_from_snapshot(core_snapshot(alerts=()), "Home").fields
    assert (none_active["alerts_count"], none_active["alerts"]) == (0, "")
    unknown = reading_from_snapshot(core_snapshot(alerts=None), "Home").fields
    assert "alerts_count" not in unknown
    assert "alerts" not in unknown


def test_not_a_number_is_unknown() -> None:
    fields = reading_from_snapshot(
        core_snapshot(site_energy_imported_wh=math.nan, backup_reserve_percent=math.inf), "Home"
    ).fields
    assert "site_energy_imported_wh" not in fields
    assert "backup_reserve_percent" not in fields


def test_pv_strings_are_named_from_the_template() -> None:
    fields = reading_from_snapshot(full_snapshot(), "Home").fields
    assert fields["string_a_connected"] is True
    assert fields["string_b1_connected"] is False
    assert fields["string_a_state"] == "PV_Active"
    assert fields["string_a_power_w"] == 1976.0
    found = metric("string_b1_power_w")
    assert (found.name, found.unit, found.kind, found.scope) == ("string_b1_power_w", "W", float, "string")
    assert "B1" in found.description
    assert metric("string_f_connected").kind is bool


def test_temperatures_get_clean_names() -> None:
    fields = reading_from_snapshot(full_snapshot(), "Home").fields
    name = "temperature_tepod_1707000_11_j_tg100_c"
    assert fields[name] == 29.5
    assert metric(name).unit == "°C"


def test_each_powerwall_is_keyed_by_serial() -> None:
    reading = reading_from_snapshot(full_snapshot(), "Home")
    assert reading.units == {
        "TG100": {
            "nominal_energy_remaining_wh": 5000.0,
            "nominal_full_pack_energy_wh": 13500.0,
            "power_w": -750.0,
            "state": "BMS_Active",
            "part_number": "1707000-11-J",
        }
    }
    assert type(reading.units["TG100"]["nominal_energy_remaining_wh"]) is float
    assert unit_metric("power_w").unit == "W"


def test_a_reading_keeps_the_snapshot_time_and_round_trips() -> None:
    reading = reading_from_snapshot(full_snapshot(), "Home")
    assert reading.timestamp == WHEN
    again = Reading.from_json(reading.to_json())
    assert again == reading
    assert {k: type(v) for k, v in again.fields.items()} == {k: type(v) for k, v in reading.fields.items()}


@pytest.mark.parametrize("name", ["no_such_metric", "string__power_w", "string_a_energy_wh", "power_w", ""])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(UnknownMetricError):
        metric(name)


def test_site_name_setting_replaces_the_gateways() -> None:
    snapshot = full_snapshot()
    assert site_for(snapshot, parse_settings({"PW_GATEWAY_PASSWORD": "g"})) == "Home"
    renamed = parse_settings({"PW_GATEWAY_PASSWORD": "g", "SITE_NAME": "Cabin/North"})
    assert site_for(snapshot, renamed) == "Cabin/North"
    assert site_for(core_snapshot(), parse_settings({"PW_GATEWAY_PASSWORD": "g"})) == "unknown"


def test_the_table_is_consistent() -> None:
    metrics = list(catalogue.all_metrics())
    site_names = [m.name for m in metrics if m.scope != "unit"]
    assert len(site_names) == len(set(site_names))
    units = {"power": "W", "energy": "Wh", "energy_storage": "Wh", "voltage": "V", "current": "A"}
    units |= {"frequency": "Hz", "temperature": "°C", "battery": "%"}
    for m in metrics:
        assert m.kind in (float, int, bool, str), m.name
        if m.device_class is not None:
            assert m.unit == units[m.device_class], m.name
        if m.device_class == "energy":
            assert m.state_class == "total_increasing", m.name
        if m.kind in (str, bool):
            assert m.state_class is None, m.name
        assert m.description.endswith("."), m.name


def test_generated_docs_are_up_to_date() -> None:
    assert docs.stale() == [], "run: python -m powerwall_service.docs"


def test_metrics_doc_corrects_the_specs_battery_sign() -> None:
    text = docs.metrics_markdown()
    assert "positive when the battery discharges" in text
    for m in catalogue.all_metrics():
        assert f"`{m.name}`" in text
