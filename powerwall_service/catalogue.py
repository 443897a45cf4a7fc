"""The metric catalogue: every value the service writes, with its name, unit, type and meaning.

One table, in the style of Home Assistant's SensorEntityDescription. InfluxDB fields, MQTT
entities, Prometheus gauges and docs/metrics.md are all made from it, so no other module spells
a metric name. Names and types that the spec's service wrote are kept, so an existing bucket and
dashboard keep working; new data has new names.

Three scopes: site metrics (fields of the `<measurement>` point), PV-string and temperature
metrics (also site fields, one set per string or sensor, named from a template), and per-Powerwall
metrics (fields of the `<measurement>_battery` point tagged with the serial).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from powerwall_service.reading import FieldValue, Reading
from powerwall_service.snapshot import PowerwallUnit, PVString, Snapshot

if TYPE_CHECKING:
    from powerwall_service.config import Settings

Kind = type[float] | type[int] | type[bool] | type[str]
Scope = Literal["site", "string", "temperature", "unit"]
Source = TypeVar("Source")

UNKNOWN_SITE = "unknown"
METERS = ("site", "battery", "load", "solar")


class UnknownMetricError(KeyError):
    """No metric of that name in the catalogue."""


@dataclass(frozen=True, slots=True)
class Metric(Generic[Source]):
    """One metric. `name` holds `<x>` (string) or `<sensor>` (temperature) in a template."""

    name: str
    kind: Kind
    unit: str | None
    device_class: str | None
    state_class: str | None
    description: str
    value: Callable[[Source], object]
    scope: Scope = "site"

    def typed(self, source: Source) -> FieldValue | None:
        """The value in the catalogue's type; `None` (absent) when unknown or not a finite number."""
        return _typed(self.kind, self.value(source))


def _typed(kind: Kind, raw: object) -> FieldValue | None:
    if raw is None:
        return None
    if kind is str:
        return str(raw)
    if kind is bool:
        return raw if isinstance(raw, bool) else None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if not math.isfinite(raw):
        return None
    if kind is int:
        return int(raw) if float(raw).is_integer() else None
    return float(raw)


def _power(name: str, description: str, attr: str) -> Metric[Snapshot]:
    return Metric(name, float, "W", "power", "measurement", description, lambda s: getattr(s, attr))


def _counter(name: str, description: str) -> Metric[Snapshot]:
    return Metric(name, float, "Wh", "energy", "total_increasing", description, lambda s: getattr(s, name))


def _meter(meter: str, quantity: str, unit: str, device_class: str) -> Metric[Snapshot]:
    attr = {"V": "voltage_v", "A": "current_a", "Hz": "frequency_hz"}[unit]

    def read(snapshot: Snapshot) -> object:
        section = snapshot.meters.get(meter)
        return None if section is None else getattr(section, attr)

    return Metric(
        f"{meter}_{attr}",
        float,
        unit,
        device_class,
        "measurement",
        f"{quantity} at the {meter} meter.",
        read,
    )


def _alerts_text(snapshot: Snapshot) -> str | None:
    return None if snapshot.alerts is None else ";".join(snapshot.alerts)


def _alerts_count(snapshot: Snapshot) -> int | None:
    return None if snapshot.alerts is None else len(snapshot.alerts)


SITE_METRICS: tuple[Metric[Snapshot], ...] = (
    Metric(
        "battery_percentage",
        float,
        "%",
        "battery",
        "measurement",
        "State of charge as the gateway reports it (raw, 0-100 of the whole pack).",
        lambda s: s.battery_percentage,
    ),
    Metric(
        "battery_percentage_app",
        float,
        "%",
        "battery",
        "measurement",
        "State of charge as the Tesla app shows it (rescaled to hide the gateway's 5 % reserve).",
        lambda s: s.battery_percentage_app,
    ),
    _power("site_power_w", "Grid power: positive = importing, negative = exporting.", "site_power_w"),
    _power("solar_power_w", "Solar generation.", "solar_power_w"),
    _power(
        "battery_power_w",
        "Battery power: positive = discharging, negative = charging.",
        "battery_power_w",
    ),
    _power("load_power_w", "Home consumption (= site + battery + solar).", "load_power_w"),
    _counter("site_energy_imported_wh", "Lifetime energy imported from the grid."),
    _counter("site_energy_exported_wh", "Lifetime energy exported to the grid."),
    _counter("solar_energy_exported_wh", "Lifetime solar energy produced."),
    _counter("battery_energy_imported_wh", "Lifetime energy charged into the batteries."),
    _counter("battery_energy_exported_wh", "Lifetime energy discharged from the batteries."),
    _counter("load_energy_imported_wh", "Lifetime energy consumed by the home."),
    *(
        _meter(meter, quantity, unit, device_class)
        for meter in METERS
        for quantity, unit, device_class in (
            ("Voltage", "V", "voltage"),
            ("Current", "A", "current"),
            ("Frequency", "Hz", "frequency"),
        )
    ),
    Metric(
        "battery_nominal_energy_remaining_wh",
        float,
        "Wh",
        "energy_storage",
        "measurement",
        "Energy left in all Powerwalls.",
        lambda s: s.battery_nominal_energy_remaining_wh,
    ),
    Metric(
        "battery_nominal_full_energy_wh",
        float,
        "Wh",
        "energy_storage",
        "measurement",
        "Energy all Powerwalls hold when full.",
        lambda s: s.battery_nominal_full_energy_wh,
    ),
    Metric(
        "backup_reserve_percent",
        float,
        "%",
        None,
        "measurement",
        "Backup reserve set in the Tesla app.",
        lambda s: s.backup_reserve_percent,
    ),
    Metric(
        "operation_mode",
        str,
        None,
        None,
        None,
        "Operation mode (self_consumption, autonomous, backup).",
        lambda s: s.operation_mode,
    ),
    Metric(
        "grid_status",
        str,
        None,
        None,
        None,
        "Grid status text: UP, DOWN or SYNCING.",
        lambda s: s.grid_status,
    ),
    Metric(
        "grid_status_code",
        int,
        None,
        None,
        "measurement",
        "Grid status as a number for graphs: 1 up, 0 down, -1 syncing.",
        lambda s: s.grid_status_code,
    ),
    Metric(
        "alerts_count",
        int,
        None,
        None,
        "measurement",
        "Number of active alerts.",
        _alerts_count,
    ),
    Metric(
        "alerts",
        str,
        None,
        None,
        None,
        "Active alerts joined with `;` (empty when there are none).",
        _alerts_text,
    ),
    Metric("din", str, None, None, None, "The gateway's DIN.", lambda s: s.din),
    Metric("firmware", str, None, None, None, "The gateway's firmware version.", lambda s: s.firmware),
)

STRING_METRICS: tuple[Metric[PVString], ...] = (
    Metric(
        "string_<x>_voltage_v",
        float,
        "V",
        "voltage",
        "measurement",
        "Voltage of PV string <X>.",
        lambda p: p.voltage_v,
        "string",
    ),
    Metric(
        "string_<x>_current_a",
        float,
        "A",
        "current",
        "measurement",
        "Current of PV string <X>.",
        lambda p: p.current_a,
        "string",
    ),
    Metric(
        "string_<x>_power_w",
        float,
        "W",
        "power",
        "measurement",
        "Power of PV string <X>.",
        lambda p: p.power_w,
        "string",
    ),
    Metric(
        "string_<x>_connected",
        bool,
        None,
        None,
        None,
        "Whether PV string <X> is connected.",
        lambda p: p.connected,
        "string",
    ),
    Metric(
        "string_<x>_state",
        str,
        None,
        None,
        None,
        "State of PV string <X> as the inverter reports it.",
        lambda p: p.state,
        "string",
    ),
)

TEMPERATURE_METRIC: Metric[float] = Metric(
    "temperature_<sensor>_c",
    float,
    "°C",
    "temperature",
    "measurement",
    "Temperature of <sensor>.",
    lambda t: t,
    "temperature",
)

UNIT_METRICS: tuple[Metric[PowerwallUnit], ...] = (
    Metric(
        "nominal_energy_remaining_wh",
        float,
        "Wh",
        "energy_storage",
        "measurement",
        "Energy left in this Powerwall.",
        lambda u: u.nominal_energy_remaining_wh,
        "unit",
    ),
    Metric(
        "nominal_full_pack_energy_wh",
        float,
        "Wh",
        "energy_storage",
        "measurement",
        "Energy this Powerwall holds when full.",
        lambda u: u.nominal_full_pack_energy_wh,
        "unit",
    ),
    Metric(
        "power_w",
        float,
        "W",
        "power",
        "measurement",
        "This Powerwall's power: positive = discharging.",
        lambda u: u.power_w,
        "unit",
    ),
    Metric(
        "temperature_c",
        float,
        "°C",
        "temperature",
        "measurement",
        "This Powerwall's temperature.",
        lambda u: u.temperature_c,
        "unit",
    ),
    Metric("state", str, None, None, None, "This Powerwall's state.", lambda u: u.state, "unit"),
    Metric(
        "part_number",
        str,
        None,
        None,
        None,
        "This Powerwall's part number.",
        lambda u: u.part_number,
        "unit",
    ),
)


def all_metrics() -> Iterator[Metric[Any]]:
    """Every definition, templates included, in documentation order."""
    yield from SITE_METRICS
    yield from STRING_METRICS
    yield TEMPERATURE_METRIC
    yield from UNIT_METRICS


_SITE_BY_NAME = {m.name: m for m in SITE_METRICS}
_UNIT_BY_NAME = {m.name: m for m in UNIT_METRICS}
_STRING_NAME = re.compile(r"string_([a-z][0-9]*)_(voltage_v|current_a|power_w|connected|state)")
_TEMPERATURE_NAME = re.compile(r"temperature_([a-z0-9_]+)_c")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def string_key(pypowerwall_name: str) -> str:
    """pypowerwall's string name (A, B1, ...) as it appears in metric names (a, b1, ...)."""
    return pypowerwall_name.lower()


def sensor_key(sensor: str) -> str:
    """A temperature sensor's name as it appears in metric names: lower case, `_` between words."""
    return _NOT_NAME.sub("_", sensor.lower()).strip("_")


def _concrete(template: Metric[Source], placeholder: str, key: str) -> Metric[Source]:
    return replace(
        template,
        name=template.name.replace(placeholder, key),
        description=template.description.replace(placeholder.upper(), key.upper()).replace(placeholder, key),
    )


def string_metric(template: Metric[PVString], key: str) -> Metric[PVString]:
    """A string template made concrete for string `key` (already lower case)."""
    return _concrete(template, "<x>", key)


def temperature_metric(key: str) -> Metric[float]:
    return _concrete(TEMPERATURE_METRIC, "<sensor>", key)


def metric(name: str) -> Metric[Any]:
    """A site field by name, string and temperature names included (`string_a_power_w`)."""
    found = _SITE_BY_NAME.get(name)
    if found is not None:
        return found
    matched = _STRING_NAME.fullmatch(name)
    if matched is not None:
        suffix = matched.group(2)
        template = next(m for m in STRING_METRICS if m.name.endswith(f"_{suffix}"))
        return string_metric(template, matched.group(1))
    matched = _TEMPERATURE_NAME.fullmatch(name)
    if matched is not None:
        return temperature_metric(matched.group(1))
    raise UnknownMetricError(name)


def unit_metric(name: str) -> Metric[Any]:
    """A per-Powerwall field by name."""
    try:
        return _UNIT_BY_NAME[name]
    except KeyError:
        raise UnknownMetricError(name) from None


def site_fields(snapshot: Snapshot) -> dict[str, FieldValue]:
    """The site point's fields, typed; unknown values are left out."""
    values: dict[str, FieldValue] = {}
    for m in SITE_METRICS:
        _put(values, m.name, m.typed(snapshot))
    for name, pv in sorted(snapshot.strings.items()):
        for template in STRING_METRICS:
            _put(values, string_metric(template, string_key(name)).name, template.typed(pv))
    for sensor, celsius in sorted(snapshot.temperatures.items()):
        _put(values, temperature_metric(sensor_key(sensor)).name, TEMPERATURE_METRIC.typed(celsius))
    return values


def unit_fields(unit: PowerwallUnit) -> dict[str, FieldValue]:
    """One Powerwall's fields, typed; unknown values are left out."""
    values: dict[str, FieldValue] = {}
    for m in UNIT_METRICS:
        _put(values, m.name, m.typed(unit))
    return values


def _put(values: dict[str, FieldValue], name: str, value: FieldValue | None) -> None:
    if value is not None:
        values[name] = value


def site_for(snapshot: Snapshot, settings: Settings) -> str:
    """The site tag: SITE_NAME when set, else the gateway's site name, else `unknown`."""
    return settings.site_name or snapshot.site_name or UNKNOWN_SITE


def reading_from_snapshot(snapshot: Snapshot, site: str) -> Reading:
    """The Reading every sink writes: typed fields for the site and for each Powerwall."""
    units: Mapping[str, Mapping[str, FieldValue]] = {
        serial: unit_fields(unit) for serial, unit in sorted(snapshot.powerwalls.items())
    }
    return Reading(
        timestamp=snapshot.timestamp,
        site=site,
        fields=site_fields(snapshot),
        units={serial: values for serial, values in units.items() if values},
    )
