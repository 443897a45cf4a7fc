"""The simulated home: sun, clouds, house load, Powerwalls and grid, as a pure step function.

`step(config, state, dt, rng)` returns the state `dt` simulated seconds later and never touches
the clock, the network or global randomness, so property tests can drive it directly and the
same seed always gives the same series. The flows a state reports are the ones that held over
the step that produced it: the lifetime counters and the battery energy change by exactly
those flows times the step length.

Signs are pypowerwall's: battery positive = discharging, site positive = importing, and
load = site + battery + solar always holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

GRID_CONNECTED = "SystemGridConnected"
ISLANDED = "SystemIslandedActive"
GRID_STATUSES = (
    GRID_CONNECTED,
    ISLANDED,
    "SystemMicroGridFaulted",
    "SystemWaitForUser",
    "SystemTransitionToGrid",
    "SystemTransitionToIsland",
    "SystemIslandedReady",
)
REAL_MODES = ("self_consumption", "backup", "autonomous")

PV_ACTIVE = "PV_Active"
PV_DISABLED = "PV_Disabled"
PW_STATE = "THC_STATE_AUTONOMOUSCONTROL"

NOMINAL_VOLTAGE_V = 240.0
NOMINAL_FREQUENCY_HZ = 60.0
MPP_VOLTAGE_V = 380.0
STRING_CAPACITY_W = 2000.0
AMBIENT_C = 20.0

_LATITUDES = {"Australia": -33.9, "Europe": 51.0, "America": 37.4, "Pacific": 21.3}

# name, power W, duration s, mean seconds between starts
_APPLIANCES = (
    ("kettle", 2000.0, 180.0, 4 * 3600.0),
    ("oven", 2400.0, 2400.0, 12 * 3600.0),
    ("dishwasher", 1200.0, 3600.0, 12 * 3600.0),
    ("washer", 500.0, 2700.0, 16 * 3600.0),
    ("heat_pump", 1500.0, 1200.0, 3 * 3600.0),
    ("ev_charger", 7200.0, 7200.0, 36 * 3600.0),
)


@dataclass(frozen=True)
class StringSpec:
    """One PV string: its gateway name, whether a panel run is wired to it, and its share."""

    name: str
    wired: bool
    weight: float


@dataclass(frozen=True)
class PowerwallSpec:
    serial: str
    part_number: str
    din: str
    full_pack_wh: float
    max_charge_w: float
    max_discharge_w: float


@dataclass(frozen=True)
class InverterSpec:
    """A PV inverter: the Powerwall+ PVAC of a pw2 system, or the solar side of one PW3 unit."""

    part_number: str
    serial: str
    din: str
    strings: tuple[StringSpec, ...]


@dataclass(frozen=True)
class HomeConfig:
    """What does not change while the simulator runs: hardware, identities and limits."""

    flavour: str
    seed: int
    gateway_part_number: str
    gateway_serial: str
    powerwalls: tuple[PowerwallSpec, ...]
    inverters: tuple[InverterSpec, ...]
    base_load_w: float

    @property
    def gateway_din(self) -> str:
        return f"{self.gateway_part_number}--{self.gateway_serial}"

    @property
    def string_names(self) -> tuple[str, ...]:
        return tuple(s.name for inv in self.inverters for s in inv.strings)

    @property
    def solar_capacity_w(self) -> float:
        return sum(STRING_CAPACITY_W * s.weight for inv in self.inverters for s in inv.strings if s.wired)


@dataclass(frozen=True)
class StringReading:
    voltage_v: float
    current_a: float
    power_w: float
    connected: bool
    state: str


@dataclass(frozen=True)
class PowerwallReading:
    energy_remaining_wh: float
    full_pack_wh: float
    power_w: float
    temperature_c: float
    state: str


@dataclass(frozen=True)
class Appliance:
    name: str
    power_w: float
    remaining_s: float


@dataclass(frozen=True)
class StringPin:
    """Pinned values of one string; None leaves that value to the model."""

    voltage_v: float | None = None
    current_a: float | None = None
    connected: bool | None = None
    state: str | None = None


@dataclass(frozen=True)
class Pins:
    """Values a tester pinned through PUT /_sim/state; they hold until DELETE /_sim/state."""

    site_power_w: float | None = None
    solar_power_w: float | None = None
    battery_power_w: float | None = None
    load_power_w: float | None = None
    site_voltage_v: float | None = None
    site_frequency_hz: float | None = None
    battery_voltage_v: float | None = None
    battery_frequency_hz: float | None = None
    load_voltage_v: float | None = None
    load_frequency_hz: float | None = None
    solar_voltage_v: float | None = None
    solar_frequency_hz: float | None = None
    grid_status: str | None = None
    grid_services_active: bool | None = None
    alerts: tuple[str, ...] | None = None
    strings: tuple[tuple[str, StringPin], ...] = ()
    temperatures_c: tuple[tuple[str, float], ...] = ()
    powerwall_states: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Counters:
    """Lifetime energies in Wh, as /api/meters/aggregates reports them."""

    site_imported_wh: float
    site_exported_wh: float
    solar_exported_wh: float
    battery_imported_wh: float
    battery_exported_wh: float
    load_imported_wh: float


@dataclass(frozen=True)
class Electrical:
    """Voltage and frequency of one meter location (0 when it is dead, e.g. the grid in an outage)."""

    voltage_v: float
    frequency_hz: float


@dataclass(frozen=True)
class HomeState:
    time: datetime
    timezone: str
    site_name: str
    backup_reserve_percent: float
    real_mode: str
    site_power_w: float
    solar_power_w: float
    battery_power_w: float
    load_power_w: float
    grid_status: str
    grid_services_active: bool
    site: Electrical
    battery: Electrical
    load: Electrical
    solar: Electrical
    counters: Counters
    strings: tuple[tuple[str, StringReading], ...]
    powerwalls: tuple[tuple[str, PowerwallReading], ...]
    alerts: tuple[str, ...]
    cloud_factor: float
    cloud_remaining_s: float
    appliances: tuple[Appliance, ...]
    noise: float
    pins: Pins = field(default_factory=Pins)

    @property
    def energy_remaining_wh(self) -> float:
        return sum(pw.energy_remaining_wh for _, pw in self.powerwalls)

    @property
    def full_pack_wh(self) -> float:
        return sum(pw.full_pack_wh for _, pw in self.powerwalls)

    @property
    def battery_percentage(self) -> float:
        return self.energy_remaining_wh / self.full_pack_wh * 100.0

    @property
    def islanded(self) -> bool:
        return self.grid_status != GRID_CONNECTED


def _serial(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(12))


def build_config(flavour: str, powerwalls: int, seed: int) -> HomeConfig:
    """The hardware of a home; identities are derived from the seed so reruns match."""
    if flavour not in ("pw2", "pw3"):
        raise ValueError(f"flavour must be pw2 or pw3, not {flavour!r}")
    if not 1 <= powerwalls <= 12:
        raise ValueError(f"powerwalls must be between 1 and 12, not {powerwalls}")
    rng = random.Random(f"config-{seed}")
    units: list[PowerwallSpec] = []
    inverters: list[InverterSpec] = []
    for index in range(powerwalls):
        serial = _serial(rng, "TG1")
        if flavour == "pw3":
            part = "1707000-11-L"
            units.append(PowerwallSpec(serial, part, f"{part}--{serial}", 13500.0, 5000.0, 11500.0))
            suffix = "" if index == 0 else str(index)
            wired = 4 if index == 0 else 2
            strings = tuple(
                StringSpec(letter + suffix, i < wired, round(rng.uniform(0.85, 1.1), 3))
                for i, letter in enumerate("ABCDEF")
            )
            inverters.append(InverterSpec(part, serial, f"{part}--{serial}", strings))
        else:
            part = "2012170-25-E"
            full = float(rng.randint(13200, 13500))
            units.append(PowerwallSpec(serial, part, f"{part}--{serial}", full, 5000.0, 5000.0))
    if flavour == "pw2":
        for index in range(min(powerwalls, 2)):
            suffix = "" if index == 0 else str(index)
            serial = units[index].serial
            part = "1538000-45-C"
            strings = tuple(
                StringSpec(letter + suffix, i < 3, round(rng.uniform(0.85, 1.1), 3))
                for i, letter in enumerate("ABCD")
            )
            inverters.append(InverterSpec(part, serial, f"{part}--{serial}", strings))
    gateway_part = "1841000-01-D" if flavour == "pw3" else "1232100-00-E"
    return HomeConfig(
        flavour=flavour,
        seed=seed,
        gateway_part_number=gateway_part,
        gateway_serial=_serial(rng, "GF" if flavour == "pw3" else "TG"),
        powerwalls=tuple(units),
        inverters=tuple(inverters),
        base_load_w=round(rng.uniform(300.0, 500.0), 1),
    )


def initial_state(config: HomeConfig, start: datetime, site_name: str, timezone: str) -> HomeState:
    """The home at `start`: a plausible charge, lifetime counters and weather, all from the seed."""
    rng = random.Random(f"state-{config.seed}")
    fraction = rng.uniform(0.4, 0.8)
    powerwalls = tuple(
        (
            pw.serial,
            PowerwallReading(
                energy_remaining_wh=round(pw.full_pack_wh * fraction, 1),
                full_pack_wh=pw.full_pack_wh,
                power_w=0.0,
                temperature_c=AMBIENT_C,
                state=PW_STATE,
            ),
        )
        for pw in config.powerwalls
    )
    years = rng.uniform(1.0, 4.0)
    counters = Counters(
        site_imported_wh=round(years * 3.0e6, 1),
        site_exported_wh=round(years * 2.0e6, 1),
        solar_exported_wh=round(years * 8.0e6, 1),
        battery_imported_wh=round(years * 3.5e6, 1),
        battery_exported_wh=round(years * 3.2e6, 1),
        load_imported_wh=round(years * 9.7e6, 1),
    )
    dead = Electrical(0.0, 0.0)
    state = HomeState(
        time=start,
        timezone=timezone,
        site_name=site_name,
        backup_reserve_percent=24.0,
        real_mode="self_consumption",
        site_power_w=0.0,
        solar_power_w=0.0,
        battery_power_w=0.0,
        load_power_w=0.0,
        grid_status=GRID_CONNECTED,
        grid_services_active=False,
        site=dead,
        battery=dead,
        load=dead,
        solar=dead,
        counters=counters,
        strings=(),
        powerwalls=powerwalls,
        alerts=(),
        cloud_factor=1.0,
        cloud_remaining_s=0.0,
        appliances=(),
        noise=0.0,
    )
    return step(config, state, 0.0, rng)


def latitude(timezone: str) -> float:
    return _LATITUDES.get(timezone.split("/")[0], 37.4)


def clear_sky_fraction(when: datetime, timezone: str) -> float:
    """Fraction of nameplate a clear sky gives at `when`, from the sun's elevation at the site.

    Local solar time is the zone's standard time (daylight saving removed), which puts solar noon
    near 12:00 standard time, close enough for a simulated home.
    """
    local = when.astimezone(ZoneInfo(timezone))
    offset = local.utcoffset() or timedelta()
    dst = local.dst() or timedelta()
    standard = when.astimezone(UTC) + offset - dst
    hours = standard.hour + standard.minute / 60.0 + standard.second / 3600.0
    day = standard.timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2.0 * math.pi * (284 + day) / 365.0)
    lat = math.radians(latitude(timezone))
    hour_angle = math.radians((hours - 12.0) * 15.0)
    sin_elevation = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(
        hour_angle
    )
    if sin_elevation <= 0.0:
        return 0.0
    return 0.85 * math.pow(sin_elevation, 1.15)


def _house_load_w(
    config: HomeConfig, when: datetime, timezone: str, appliances: tuple[Appliance, ...]
) -> float:
    local = when.astimezone(ZoneInfo(timezone))
    hours = local.hour + local.minute / 60.0
    morning = 250.0 * math.exp(-(((hours - 7.5) / 1.2) ** 2))
    evening = 600.0 * math.exp(-(((hours - 19.0) / 2.0) ** 2))
    return config.base_load_w + morning + evening + sum(a.power_w for a in appliances)


def _evolve_appliances(
    appliances: tuple[Appliance, ...], dt: float, rng: random.Random
) -> tuple[Appliance, ...]:
    running = [dataclasses.replace(a, remaining_s=a.remaining_s - dt) for a in appliances]
    kept = [a for a in running if a.remaining_s > 0.0]
    names = {a.name for a in kept}
    for name, power, duration, mean_gap in _APPLIANCES:
        if name not in names and rng.random() < 1.0 - math.exp(-dt / mean_gap):
            kept.append(Appliance(name, power, duration * rng.uniform(0.7, 1.3)))
    return tuple(kept)


def _evolve_clouds(factor: float, remaining: float, dt: float, rng: random.Random) -> tuple[float, float]:
    remaining -= dt
    if remaining > 0.0:
        return factor, remaining
    if rng.random() < 1.0 - math.exp(-dt / 1200.0):
        return rng.uniform(0.25, 0.8), rng.uniform(60.0, 900.0)
    return 1.0, 0.0


def _battery_limits(
    config: HomeConfig, state: HomeState, dt: float, floor_fraction: float
) -> list[tuple[float, float]]:
    """Per Powerwall (max charge W, max discharge W) for this step: rating, then energy headroom."""
    limits = []
    for spec, (_, pw) in zip(config.powerwalls, state.powerwalls, strict=True):
        floor = pw.full_pack_wh * floor_fraction
        room_down = max(0.0, pw.energy_remaining_wh - floor)
        room_up = max(0.0, pw.full_pack_wh - pw.energy_remaining_wh)
        if dt > 0.0:
            limits.append(
                (
                    min(spec.max_charge_w, room_up * 3600.0 / dt),
                    min(spec.max_discharge_w, room_down * 3600.0 / dt),
                )
            )
        else:
            limits.append(
                (spec.max_charge_w if room_up > 0 else 0.0, spec.max_discharge_w if room_down > 0 else 0.0)
            )
    return limits


def _split_battery(total: float, limits: list[tuple[float, float]]) -> list[float]:
    """Share the battery power among the Powerwalls in proportion to what each can give or take."""
    column = 1 if total > 0 else 0
    capacity = sum(limit[column] for limit in limits)
    if total == 0.0:
        return [0.0 for _ in limits]
    if capacity == 0.0:
        return [total / len(limits) for _ in limits]
    sign = 1.0 if total > 0 else -1.0
    return [sign * abs(total) * limit[column] / capacity for limit in limits]


def _mpp_voltage(spec: StringSpec, noise: float) -> float:
    return round(MPP_VOLTAGE_V * spec.weight + 10.0 * noise, 1)


def _strings(
    config: HomeConfig, solar_target_w: float, noise: float, pins: dict[str, StringPin]
) -> tuple[tuple[str, StringReading], ...]:
    """String readings whose powers add up to the solar power.

    A disconnected string carries no current; a string with a pinned current keeps it; the solar
    power left over is shared among the other connected strings by their weight.
    """
    specs = [s for inverter in config.inverters for s in inverter.strings]
    fixed: dict[str, tuple[float, float]] = {}
    for spec in specs:
        pin = pins.get(spec.name, StringPin())
        connected = spec.wired if pin.connected is None else pin.connected
        if not connected:
            fixed[spec.name] = (pin.voltage_v or 0.0, 0.0)
        elif pin.current_a is not None:
            fixed[spec.name] = (
                pin.voltage_v if pin.voltage_v is not None else _mpp_voltage(spec, noise),
                pin.current_a,
            )
    remaining = max(0.0, solar_target_w - sum(v * i for v, i in fixed.values()))
    weight = sum(s.weight for s in specs if s.name not in fixed)
    out = []
    for spec in specs:
        pin = pins.get(spec.name, StringPin())
        connected = spec.wired if pin.connected is None else pin.connected
        if spec.name in fixed:
            voltage, current = fixed[spec.name]
        else:
            share = remaining * spec.weight / weight
            voltage = (
                pin.voltage_v
                if pin.voltage_v is not None
                else (_mpp_voltage(spec, noise) if share > 0 else 0.0)
            )
            current = share / voltage if voltage > 0 else 0.0
        state = pin.state or (PV_ACTIVE if connected else PV_DISABLED)
        out.append((spec.name, StringReading(voltage, current, voltage * current, connected, state)))
    return tuple(out)


def _alerts(grid_status: str, grid_services_active: bool) -> tuple[str, ...]:
    alerts = ["SystemConnectedToGrid" if grid_status == GRID_CONNECTED else grid_status]
    if grid_services_active:
        alerts.append("GridServicesActive")
    return tuple(alerts)


def _resolve_flows(
    config: HomeConfig, state: HomeState, dt: float, model_solar: float, model_load: float
) -> tuple[float, float, float, float, tuple[tuple[str, StringReading], ...], list[float]]:
    """Site, solar, battery, load, strings and per-Powerwall battery power for this step.

    Pinned values win; the model fills in the rest so that load = site + battery + solar holds.
    Off grid the site is 0: the battery covers the house (shedding load it cannot carry) and
    solar it cannot absorb is curtailed.
    """
    pins = state.pins
    islanded = state.islanded
    limits = _battery_limits(config, state, dt, 0.0 if islanded else state.backup_reserve_percent / 100.0)
    max_charge = sum(c for c, _ in limits)
    max_discharge = sum(d for _, d in limits)

    solar_target = model_solar if pins.solar_power_w is None else pins.solar_power_w
    load = model_load if pins.load_power_w is None else pins.load_power_w
    if pins.battery_power_w is not None:
        battery = pins.battery_power_w
    elif pins.site_power_w is not None:
        battery = load - solar_target - pins.site_power_w
    elif state.real_mode == "backup" and not islanded:
        battery = -max_charge
    else:
        battery = max(-max_charge, min(max_discharge, load - solar_target))
        if islanded and pins.solar_power_w is None and load - solar_target < battery:
            solar_target = max(0.0, load - battery)
    strings = _strings(config, solar_target, state.noise, dict(pins.strings))
    solar = solar_target if pins.solar_power_w is not None else sum(r.power_w for _, r in strings)

    if pins.site_power_w is not None and pins.battery_power_w is not None:
        site = pins.site_power_w
        load = site + battery + solar
    elif pins.site_power_w is not None:
        site = pins.site_power_w
        battery = load - solar - site
    elif islanded and pins.load_power_w is None:
        site = 0.0
        load = battery + solar
    elif islanded and pins.battery_power_w is None:
        site = 0.0
        battery = load - solar
    else:
        site = load - battery - solar
        if abs(site) < 1e-6:  # the battery covers the house: 0 W, not a float residue like -1e-13
            site, battery = 0.0, load - solar
    # Adding 0.0 turns a clamped -0.0 into 0.0 (and changes nothing else), so no reading shows "-0".
    site, solar, battery, load = site + 0.0, solar + 0.0, battery + 0.0, load + 0.0
    return site, solar, battery, load, strings, _split_battery(battery, limits)


def _electrical(
    pinned_v: float | None, pinned_f: float | None, alive: bool, noise: float, offset: float
) -> Electrical:
    voltage = (
        pinned_v
        if pinned_v is not None
        else (round(NOMINAL_VOLTAGE_V + 2.0 * noise + offset, 2) if alive else 0.0)
    )
    freq = (
        pinned_f
        if pinned_f is not None
        else (round(NOMINAL_FREQUENCY_HZ + 0.02 * noise, 3) if alive else 0.0)
    )
    return Electrical(voltage, freq)


def step(config: HomeConfig, state: HomeState, dt: float, rng: random.Random) -> HomeState:
    """The home `dt` simulated seconds later (dt = 0 re-resolves the flows after a change of pins)."""
    if dt < 0.0:
        raise ValueError("dt must not be negative")
    when = state.time + timedelta(seconds=dt)
    if dt > 0.0:
        cloud_factor, cloud_remaining = _evolve_clouds(state.cloud_factor, state.cloud_remaining_s, dt, rng)
        appliances = _evolve_appliances(state.appliances, dt, rng)
        noise = max(-1.0, min(1.0, state.noise * 0.9 + rng.gauss(0.0, 0.3)))
    else:
        cloud_factor, cloud_remaining, appliances, noise = (
            state.cloud_factor,
            state.cloud_remaining_s,
            state.appliances,
            state.noise,
        )
    pins = state.pins
    grid_status = pins.grid_status or GRID_CONNECTED
    grid_services = bool(pins.grid_services_active)
    evolved = dataclasses.replace(
        state,
        time=when,
        cloud_factor=cloud_factor,
        cloud_remaining_s=cloud_remaining,
        appliances=appliances,
        noise=noise,
        grid_status=grid_status,
        grid_services_active=grid_services,
    )
    model_solar = config.solar_capacity_w * clear_sky_fraction(when, state.timezone) * cloud_factor
    model_load = round(_house_load_w(config, when, state.timezone, appliances) + 15.0 * noise, 1)
    site, solar, battery, load, strings, shares = _resolve_flows(config, evolved, dt, model_solar, model_load)

    hours = dt / 3600.0
    temperatures = dict(pins.temperatures_c)
    pw_states = dict(pins.powerwall_states)
    powerwalls = []
    for (serial, pw), share in zip(state.powerwalls, shares, strict=True):
        energy = min(pw.full_pack_wh, max(0.0, pw.energy_remaining_wh - share * hours))
        target = AMBIENT_C + 0.0008 * abs(share)
        temperature = temperatures.get(
            serial, pw.temperature_c + (target - pw.temperature_c) * (1 - math.exp(-dt / 1800.0))
        )
        powerwalls.append(
            (
                serial,
                PowerwallReading(
                    energy, pw.full_pack_wh, share, temperature, pw_states.get(serial, PW_STATE)
                ),
            )
        )
    c = state.counters
    counters = Counters(
        site_imported_wh=c.site_imported_wh + max(site, 0.0) * hours,
        site_exported_wh=c.site_exported_wh + max(-site, 0.0) * hours,
        solar_exported_wh=c.solar_exported_wh + max(solar, 0.0) * hours,
        battery_imported_wh=c.battery_imported_wh + max(-battery, 0.0) * hours,
        battery_exported_wh=c.battery_exported_wh + max(battery, 0.0) * hours,
        load_imported_wh=c.load_imported_wh + max(load, 0.0) * hours,
    )
    grid_alive = grid_status == GRID_CONNECTED
    return dataclasses.replace(
        evolved,
        site_power_w=site,
        solar_power_w=solar,
        battery_power_w=battery,
        load_power_w=load,
        site=_electrical(pins.site_voltage_v, pins.site_frequency_hz, grid_alive, noise, 0.0),
        battery=_electrical(pins.battery_voltage_v, pins.battery_frequency_hz, True, noise, 1.5),
        load=_electrical(pins.load_voltage_v, pins.load_frequency_hz, True, noise, 0.0),
        solar=_electrical(pins.solar_voltage_v, pins.solar_frequency_hz, True, noise, 0.8),
        counters=counters,
        strings=strings,
        powerwalls=tuple(powerwalls),
        alerts=pins.alerts if pins.alerts is not None else _alerts(grid_status, grid_services),
    )


def is_system_alert(alert: str) -> bool:
    """Alerts pypowerwall derives from /api/system_status/grid_status rather than from device lists."""
    return alert.startswith("System") or alert == "GridServicesActive"


def git_hash(firmware: str) -> str:
    """A stable 40-hex git hash for a firmware number, as /api/status reports one."""
    return hashlib.sha1(firmware.encode(), usedforsecurity=False).hexdigest()


def full_version(firmware: str) -> str:
    """The firmware as /api/status "version" shows it: number and short git hash."""
    return f"{firmware} {git_hash(firmware)[:8]}"


def iso_time(when: datetime, timezone: str) -> str:
    return when.astimezone(ZoneInfo(timezone)).isoformat()


def start_time() -> datetime:
    """The simulated clock starts at the real time, so readings look current."""
    return datetime.now(UTC).replace(microsecond=0)
