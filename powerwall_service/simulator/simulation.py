"""The running simulation: the home model on a clock, the gateway's settings and the tester's changes.

Every protocol module (local REST, vitals, TEDAPI) reads the home through `Simulation.now()`,
so all of them report the same truth as `GET /_sim/state` at the same moment.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from powerwall_service.simulator import home
from powerwall_service.simulator.home import HomeConfig, HomeState, Pins, StringPin

_MAX_STEP_S = 5.0
_MAX_STEPS = 2000

POWER_KEYS = ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w")
ELECTRICAL_KEYS = tuple(
    f"{location}_{quantity}"
    for location in ("site", "battery", "load", "solar")
    for quantity in ("voltage_v", "frequency_hz")
)
CURRENT_KEYS = tuple(f"{location}_current_a" for location in ("site", "battery", "load", "solar"))
COUNTER_KEYS = (
    "site_energy_imported_wh",
    "site_energy_exported_wh",
    "solar_energy_exported_wh",
    "battery_energy_imported_wh",
    "battery_energy_exported_wh",
    "load_energy_imported_wh",
)
_COUNTER_FIELDS = dict(
    zip(
        COUNTER_KEYS,
        (
            "site_imported_wh",
            "site_exported_wh",
            "solar_exported_wh",
            "battery_imported_wh",
            "battery_exported_wh",
            "load_imported_wh",
        ),
        strict=True,
    )
)
_DERIVED = {
    "flavour": "the flavour is fixed when the simulator starts",
    **{key: "currents follow from power and voltage" for key in CURRENT_KEYS},
}


class ChangeError(ValueError):
    """A PUT /_sim/state the simulator cannot apply; the message names the key and the problem."""


@dataclass
class Secrets:
    """The gateway's passwords; never part of the truth that GET /_sim/state returns."""

    customer_password: str
    gateway_password: str


@dataclass
class Simulation:
    config: HomeConfig
    state: HomeState
    firmware: str
    secrets: Secrets
    speed: float
    din: str
    rng: random.Random
    frozen: bool = False
    down: bool = False
    hang: bool = False
    started_monotonic: float = field(default_factory=time.monotonic)
    _last_monotonic: float = field(default_factory=time.monotonic)

    @classmethod
    def create(
        cls,
        *,
        flavour: str,
        powerwalls: int,
        seed: int,
        site_name: str,
        firmware: str,
        speed: float,
        customer_password: str,
        gateway_password: str,
        timezone: str = "America/Los_Angeles",
        start: datetime | None = None,
    ) -> Simulation:
        config = home.build_config(flavour, powerwalls, seed)
        state = home.initial_state(config, start or home.start_time(), site_name, timezone)
        return cls(
            config=config,
            state=state,
            firmware=firmware,
            secrets=Secrets(customer_password, gateway_password),
            speed=speed,
            din=config.gateway_din,
            rng=random.Random(f"run-{seed}"),
        )

    def now(self) -> HomeState:
        """The home at this moment: simulated time has run at `speed` since the last look."""
        current = time.monotonic()
        elapsed = (current - self._last_monotonic) * self.speed
        self._last_monotonic = current
        if self.frozen or elapsed <= 0.0:
            return self.state
        steps = max(1, math.ceil(elapsed / _MAX_STEP_S))
        steps = min(steps, _MAX_STEPS)
        dt = elapsed / steps
        state = self.state
        for _ in range(steps):
            state = home.step(self.config, state, dt, self.rng)
        self.state = state
        return state

    @property
    def version(self) -> str:
        return home.full_version(self.firmware)

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def truth(self) -> dict[str, Any]:
        """The flat truth of GET /_sim/state, in the gateway's units and signs."""
        state = self.now()
        out: dict[str, Any] = {
            "site_power_w": state.site_power_w,
            "solar_power_w": state.solar_power_w,
            "battery_power_w": state.battery_power_w,
            "load_power_w": state.load_power_w,
            "battery_percentage": state.battery_percentage,
            "nominal_energy_remaining_wh": state.energy_remaining_wh,
            "nominal_full_pack_energy_wh": state.full_pack_wh,
            "backup_reserve_percent": state.backup_reserve_percent,
            "real_mode": state.real_mode,
            "grid_status": state.grid_status,
            "grid_services_active": state.grid_services_active,
            "site_name": state.site_name,
            "timezone": state.timezone,
            "din": self.din,
            "firmware": self.version,
            "flavour": self.config.flavour,
        }
        for location in ("site", "battery", "load", "solar"):
            electrical: home.Electrical = getattr(state, location)
            power: float = getattr(state, f"{location}_power_w")
            out[f"{location}_voltage_v"] = electrical.voltage_v
            out[f"{location}_current_a"] = current_a(power, electrical.voltage_v)
            out[f"{location}_frequency_hz"] = electrical.frequency_hz
        for key, attr in _COUNTER_FIELDS.items():
            out[key] = getattr(state.counters, attr)
        out["strings"] = {
            name: {
                "voltage_v": r.voltage_v,
                "current_a": r.current_a,
                "power_w": r.power_w,
                "connected": r.connected,
                "state": r.state,
            }
            for name, r in state.strings
        }
        out["powerwalls"] = {
            spec.serial: {
                "part_number": spec.part_number,
                "din": spec.din,
                "nominal_energy_remaining_wh": pw.energy_remaining_wh,
                "nominal_full_pack_energy_wh": pw.full_pack_wh,
                "power_w": pw.power_w,
                "temperature_c": pw.temperature_c,
                "state": pw.state,
            }
            for spec, (_, pw) in zip(self.config.powerwalls, state.powerwalls, strict=True)
        }
        out["alerts"] = list(state.alerts)
        out["time"] = home.iso_time(state.time, state.timezone)
        out["frozen"] = self.frozen
        out["down"] = self.down
        out["hang"] = self.hang
        return out

    def clear_overrides(self) -> None:
        """DELETE /_sim/state: pinned values go back to the model (set values such as the charge stay)."""
        self.now()
        self.state = home.step(self.config, dataclasses.replace(self.state, pins=Pins()), 0.0, self.rng)

    def apply(self, changes: dict[str, Any]) -> float | None:
        """PUT /_sim/state: validate every key first, then apply them all (or none).

        Returns `down_for_s` when the change asks for an outage that ends by itself; the server
        owns the listening socket, so it acts on `down` and on that delay.
        """
        if not isinstance(changes, dict):
            raise ChangeError("the body must be a JSON object")
        state = self.now()
        pins = state.pins
        updates: dict[str, Any] = {}
        sim_updates: dict[str, Any] = {}
        powerwalls = dict(state.powerwalls)
        for key, value in changes.items():
            if key in _DERIVED:
                raise ChangeError(f"{key} cannot be set: {_DERIVED[key]}")
            if key in POWER_KEYS or key in ELECTRICAL_KEYS:
                pins = _pin(pins, key, _number(key, value))
            elif key in COUNTER_KEYS:
                counter = _number(key, value)
                if counter < 0:
                    raise ChangeError(f"{key} must not be negative")
                updates.setdefault("counters", state.counters)
                updates["counters"] = dataclasses.replace(
                    updates["counters"], **{_COUNTER_FIELDS[key]: counter}
                )
            elif key == "battery_percentage":
                fraction = _percent(key, value) / 100.0
                powerwalls = {
                    s: dataclasses.replace(p, energy_remaining_wh=p.full_pack_wh * fraction)
                    for s, p in powerwalls.items()
                }
            elif key == "nominal_energy_remaining_wh":
                energy = _number(key, value)
                full = sum(p.full_pack_wh for p in powerwalls.values())
                if not 0 <= energy <= full:
                    raise ChangeError(f"{key} must be between 0 and the full pack energy {full}")
                powerwalls = {
                    s: dataclasses.replace(p, energy_remaining_wh=energy * p.full_pack_wh / full)
                    for s, p in powerwalls.items()
                }
            elif key == "nominal_full_pack_energy_wh":
                full = _number(key, value)
                if full <= 0:
                    raise ChangeError(f"{key} must be positive")
                old_full = sum(p.full_pack_wh for p in powerwalls.values())
                powerwalls = {
                    s: dataclasses.replace(
                        p,
                        full_pack_wh=p.full_pack_wh * full / old_full,
                        energy_remaining_wh=min(p.energy_remaining_wh, p.full_pack_wh * full / old_full),
                    )
                    for s, p in powerwalls.items()
                }
            elif key == "backup_reserve_percent":
                updates[key] = _percent(key, value)
            elif key == "real_mode":
                updates[key] = _choice(key, value, home.REAL_MODES)
            elif key == "grid_status":
                pins = dataclasses.replace(pins, grid_status=_choice(key, value, home.GRID_STATUSES))
            elif key == "grid_services_active":
                pins = dataclasses.replace(pins, grid_services_active=_bool(key, value))
            elif key in ("site_name", "din"):
                (updates if key == "site_name" else sim_updates)[key] = _text(key, value)
            elif key == "timezone":
                updates[key] = _timezone(value)
            elif key == "firmware":
                sim_updates[key] = parse_firmware(value)
            elif key == "time":
                updates[key] = _time(value)
            elif key in ("frozen", "down", "hang"):
                sim_updates[key] = _bool(key, value)
            elif key == "down_for_s":
                seconds = _number(key, value)
                if seconds <= 0:
                    raise ChangeError("down_for_s must be positive")
                sim_updates[key] = seconds
                sim_updates["down"] = True
            elif key in ("customer_password", "gateway_password"):
                sim_updates[key] = _text(key, value)
            elif key == "alerts":
                if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                    raise ChangeError("alerts must be a list of strings")
                pins = dataclasses.replace(pins, alerts=tuple(value))
            elif key == "strings":
                pins = dataclasses.replace(pins, strings=_string_pins(value, pins, self.config))
            elif key == "powerwalls":
                pins, powerwalls = _powerwall_changes(value, pins, powerwalls)
            else:
                raise ChangeError(f"unknown key {key!r}")
        _check_balance(pins)
        new_state = dataclasses.replace(state, pins=pins, powerwalls=tuple(powerwalls.items()), **updates)
        self.state = home.step(self.config, new_state, 0.0, self.rng)
        for key, value in sim_updates.items():
            if key in ("customer_password", "gateway_password"):
                setattr(self.secrets, key, value)
            elif key != "down_for_s":
                setattr(self, key, value)
        self._last_monotonic = time.monotonic()
        down_for_s: float | None = sim_updates.get("down_for_s")
        return down_for_s


def _pin(pins: Pins, key: str, value: float) -> Pins:
    """Pins with the power or electrical value `key` pinned to `value`."""
    fields: dict[str, float | None] = {key: value}
    return dataclasses.replace(pins, **fields)  # type: ignore[arg-type]


def current_a(power_w: float, voltage_v: float) -> float:
    return abs(power_w) / voltage_v if voltage_v > 0 else 0.0


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ChangeError(f"{key} must be a finite number, not {value!r}")
    return float(value)


def _percent(key: str, value: Any) -> float:
    number = _number(key, value)
    if not 0.0 <= number <= 100.0:
        raise ChangeError(f"{key} must be between 0 and 100, not {number}")
    return number


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ChangeError(f"{key} must be true or false, not {value!r}")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ChangeError(f"{key} must be a non-empty string")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ChangeError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _timezone(value: Any) -> str:
    text = _text("timezone", value)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ChangeError(f"timezone {text!r} is not a known IANA time zone") from exc
    return text


def parse_firmware(value: Any) -> str:
    text = _text("firmware", value).split(" ")[0]
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ChangeError(f"firmware must look like 25.10.1, not {value!r}")
    return text


def _time(value: Any) -> datetime:
    text = _text("time", value)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ChangeError(f"time must be an ISO 8601 time, not {text!r}") from exc
    if when.tzinfo is None:
        raise ChangeError("time must carry a UTC offset")
    return when


def _string_pins(value: Any, pins: Pins, config: HomeConfig) -> tuple[tuple[str, StringPin], ...]:
    if not isinstance(value, dict):
        raise ChangeError("strings must be an object: name -> {voltage_v, current_a, connected, state}")
    current = dict(pins.strings)
    for name, fields in value.items():
        if name not in config.string_names:
            raise ChangeError(f"strings: no string named {name!r} (known: {', '.join(config.string_names)})")
        if not isinstance(fields, dict):
            raise ChangeError(f"strings.{name} must be an object")
        pin = current.get(name, StringPin())
        for field_name, field_value in fields.items():
            where = f"strings.{name}.{field_name}"
            if field_name in ("voltage_v", "current_a"):
                number = _number(where, field_value)
                if number < 0:
                    raise ChangeError(f"{where} must not be negative")
                pin = (
                    dataclasses.replace(pin, voltage_v=number)
                    if field_name == "voltage_v"
                    else dataclasses.replace(pin, current_a=number)
                )
            elif field_name == "connected":
                pin = dataclasses.replace(pin, connected=_bool(where, field_value))
            elif field_name == "state":
                pin = dataclasses.replace(pin, state=_text(where, field_value))
            elif field_name == "power_w":
                raise ChangeError(f"{where} cannot be set: it is voltage_v x current_a")
            else:
                raise ChangeError(f"unknown key {where!r}")
        current[name] = pin
    return tuple(current.items())


def _powerwall_changes(
    value: Any, pins: Pins, powerwalls: dict[str, home.PowerwallReading]
) -> tuple[Pins, dict[str, home.PowerwallReading]]:
    if not isinstance(value, dict):
        raise ChangeError("powerwalls must be an object: serial -> {...}")
    temperatures = dict(pins.temperatures_c)
    states = dict(pins.powerwall_states)
    for serial, fields in value.items():
        if serial not in powerwalls:
            raise ChangeError(f"powerwalls: no Powerwall with serial {serial!r}")
        if not isinstance(fields, dict):
            raise ChangeError(f"powerwalls.{serial} must be an object")
        reading = powerwalls[serial]
        for field_name, field_value in fields.items():
            where = f"powerwalls.{serial}.{field_name}"
            if field_name == "temperature_c":
                temperatures[serial] = _number(where, field_value)
            elif field_name == "state":
                states[serial] = _text(where, field_value)
            elif field_name == "nominal_energy_remaining_wh":
                energy = _number(where, field_value)
                if not 0 <= energy <= reading.full_pack_wh:
                    raise ChangeError(f"{where} must be between 0 and {reading.full_pack_wh}")
                reading = dataclasses.replace(reading, energy_remaining_wh=energy)
            elif field_name == "nominal_full_pack_energy_wh":
                full = _number(where, field_value)
                if full <= 0:
                    raise ChangeError(f"{where} must be positive")
                reading = dataclasses.replace(
                    reading, full_pack_wh=full, energy_remaining_wh=min(full, reading.energy_remaining_wh)
                )
            elif field_name in ("power_w", "part_number", "din"):
                raise ChangeError(f"{where} cannot be set: it follows from battery_power_w and the hardware")
            else:
                raise ChangeError(f"unknown key {where!r}")
        powerwalls[serial] = reading
    return (
        dataclasses.replace(
            pins, temperatures_c=tuple(temperatures.items()), powerwall_states=tuple(states.items())
        ),
        powerwalls,
    )


def _check_balance(pins: Pins) -> None:
    values = [pins.site_power_w, pins.battery_power_w, pins.solar_power_w, pins.load_power_w]
    if all(v is not None for v in values):
        site, battery, solar, load = (float(v) for v in values if v is not None)
        if abs(site + battery + solar - load) > 0.01:
            raise ChangeError("load_power_w must equal site_power_w + battery_power_w + solar_power_w")
