"""The Snapshot: what one poll of the gateway learned, typed, with `None` for "not known".

pypowerwall answers a failed read with zeros; this model never does. A value the gateway did not
give is `None`, and a poll without the core (the four power flows and the state of charge) is not
a Snapshot at all: the gateway client raises instead.

Signs follow pypowerwall and the gateway: battery positive = discharging, site positive =
importing from the grid, and `load = site + battery + solar`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Meter:
    """One aggregate meter section (site, battery, load or solar) beyond its power."""

    voltage_v: float | None = None
    current_a: float | None = None
    frequency_hz: float | None = None


@dataclass(frozen=True, slots=True)
class PVString:
    """One PV string, named as pypowerwall names it (A..F, A1.. for a second inverter)."""

    voltage_v: float | None = None
    current_a: float | None = None
    power_w: float | None = None
    connected: bool | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class PowerwallUnit:
    """One Powerwall, keyed by its serial so followers and expansions are never merged."""

    serial: str
    part_number: str | None = None
    nominal_energy_remaining_wh: float | None = None
    nominal_full_pack_energy_wh: float | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One successful poll. `timestamp` is UTC, taken when the gateway answered."""

    timestamp: datetime
    battery_percentage: float
    battery_percentage_app: float
    site_power_w: float
    solar_power_w: float
    battery_power_w: float
    load_power_w: float
    site_name: str | None = None
    din: str | None = None
    firmware: str | None = None
    site_energy_imported_wh: float | None = None
    site_energy_exported_wh: float | None = None
    solar_energy_exported_wh: float | None = None
    battery_energy_imported_wh: float | None = None
    battery_energy_exported_wh: float | None = None
    load_energy_imported_wh: float | None = None
    meters: Mapping[str, Meter] = field(default_factory=dict)
    battery_nominal_energy_remaining_wh: float | None = None
    battery_nominal_full_energy_wh: float | None = None
    backup_reserve_percent: float | None = None
    operation_mode: str | None = None
    grid_status: str | None = None
    grid_status_code: int | None = None
    alerts: tuple[str, ...] | None = None
    powerwalls: Mapping[str, PowerwallUnit] = field(default_factory=dict)
    strings: Mapping[str, PVString] = field(default_factory=dict)
    temperatures: Mapping[str, float] = field(default_factory=dict)
