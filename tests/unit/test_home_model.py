"""Property tests of the simulated home: the physics every reading of the simulator relies on."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerwall_service.simulator import home
from powerwall_service.simulator.home import HomeConfig, HomeState, Pins

START = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
TIMEZONES = ("America/Los_Angeles", "Europe/Berlin", "Australia/Sydney")

COUNTER_FLOWS: tuple[tuple[str, Callable[[HomeState], float]], ...] = (
    ("site_imported_wh", lambda s: max(s.site_power_w, 0.0)),
    ("site_exported_wh", lambda s: max(-s.site_power_w, 0.0)),
    ("solar_exported_wh", lambda s: max(s.solar_power_w, 0.0)),
    ("battery_imported_wh", lambda s: max(-s.battery_power_w, 0.0)),
    ("battery_exported_wh", lambda s: max(s.battery_power_w, 0.0)),
    ("load_imported_wh", lambda s: max(s.load_power_w, 0.0)),
)


@st.composite
def homes(draw: st.DrawFn) -> tuple[HomeConfig, HomeState]:
    config = home.build_config(
        draw(st.sampled_from(["pw2", "pw3"])), draw(st.integers(1, 3)), draw(st.integers(0, 10_000))
    )
    start = START.replace(hour=draw(st.integers(0, 23)), minute=draw(st.integers(0, 59)))
    state = home.initial_state(config, start, "Test Home", draw(st.sampled_from(TIMEZONES)))
    reserve = draw(st.floats(0.0, 100.0))
    # Start near the reserve half of the time: that is where the reserve rule can break.
    near = min(1.0, max(0.0, reserve / 100.0 + draw(st.floats(-0.05, 0.1))))
    fraction = draw(st.sampled_from([near, draw(st.floats(0.0, 1.0))]))
    powerwalls = tuple(
        (serial, dataclasses.replace(pw, energy_remaining_wh=pw.full_pack_wh * fraction))
        for serial, pw in state.powerwalls
    )
    state = dataclasses.replace(
        state,
        powerwalls=powerwalls,
        backup_reserve_percent=reserve,
        real_mode=draw(st.sampled_from(home.REAL_MODES)),
        pins=Pins(grid_status=draw(st.sampled_from([None, home.ISLANDED]))),
    )
    return config, state


steps = st.lists(st.floats(0.0, 900.0), min_size=1, max_size=25)


def run(config: HomeConfig, state: HomeState, dts: list[float], seed: int) -> list[HomeState]:
    rng = random.Random(seed)
    series = [state]
    for dt in dts:
        series.append(home.step(config, series[-1], dt, rng))
    return series


@settings(max_examples=60, deadline=None)
@given(homes(), steps)
def test_each_counter_grows_by_the_integral_of_its_flow(
    setup: tuple[HomeConfig, HomeState], dts: list[float]
) -> None:
    config, state = setup
    series = run(config, state, dts, 1)
    for before, after, dt in zip(series[:-1], series[1:], dts, strict=True):
        for name, flow in COUNTER_FLOWS:
            change = getattr(after.counters, name) - getattr(before.counters, name)
            assert change == pytest.approx(flow(after) * dt / 3600.0, rel=1e-9, abs=1e-6), name


@settings(max_examples=60, deadline=None)
@given(homes(), steps)
def test_battery_energy_follows_battery_power_and_stays_in_its_limits(
    setup: tuple[HomeConfig, HomeState], dts: list[float]
) -> None:
    config, state = setup
    series = run(config, state, dts, 2)
    for before, after, dt in zip(series[:-1], series[1:], dts, strict=True):
        assert after.energy_remaining_wh - before.energy_remaining_wh == pytest.approx(
            -after.battery_power_w * dt / 3600.0, abs=1e-6
        )
        for spec, (_, pw) in zip(config.powerwalls, after.powerwalls, strict=True):
            assert -spec.max_charge_w - 1e-6 <= pw.power_w <= spec.max_discharge_w + 1e-6
            assert 0.0 <= pw.energy_remaining_wh <= pw.full_pack_wh
        assert 0.0 <= after.battery_percentage <= 100.0
        assert after.battery_percentage == pytest.approx(
            after.energy_remaining_wh / after.full_pack_wh * 100.0
        )


@settings(max_examples=60, deadline=None)
@given(homes(), steps)
def test_discharging_never_takes_the_charge_below_the_reserve_on_grid(
    setup: tuple[HomeConfig, HomeState], dts: list[float]
) -> None:
    config, state = setup
    series = run(config, state, dts, 3)
    for before, after in itertools.pairwise(series):
        if after.islanded:
            continue
        for (_, old), (_, new) in zip(before.powerwalls, after.powerwalls, strict=True):
            floor = new.full_pack_wh * after.backup_reserve_percent / 100.0
            if new.power_w > 0:
                assert new.energy_remaining_wh >= min(floor, old.energy_remaining_wh) - 1e-6


@settings(max_examples=60, deadline=None)
@given(homes(), steps)
def test_power_balances_and_the_strings_add_up_to_the_solar_power(
    setup: tuple[HomeConfig, HomeState], dts: list[float]
) -> None:
    config, state = setup
    for after in run(config, state, dts, 4)[1:]:
        assert after.load_power_w == pytest.approx(
            after.site_power_w + after.battery_power_w + after.solar_power_w, abs=1e-6
        )
        assert after.solar_power_w >= 0.0
        assert after.load_power_w >= 0.0
        assert sum(r.power_w for _, r in after.strings) == pytest.approx(after.solar_power_w, abs=1e-6)
        for spec in (s for inverter in config.inverters for s in inverter.strings):
            reading = dict(after.strings)[spec.name]
            assert reading.power_w == pytest.approx(reading.voltage_v * reading.current_a)
            assert reading.connected is spec.wired
            if not spec.wired:
                assert reading.power_w == 0.0
                assert reading.state == home.PV_DISABLED
        if after.islanded:
            assert after.site_power_w == 0.0
            assert "SystemIslandedActive" in after.alerts
        else:
            assert "SystemConnectedToGrid" in after.alerts


@settings(max_examples=50, deadline=None)
@given(homes(), steps, st.integers(0, 1000))
def test_the_same_seed_gives_the_same_series(
    setup: tuple[HomeConfig, HomeState], dts: list[float], seed: int
) -> None:
    config, state = setup
    assert run(config, state, dts, seed) == run(config, state, dts, seed)


def test_a_different_seed_gives_a_different_home() -> None:
    one, two = home.build_config("pw3", 1, 1), home.build_config("pw3", 1, 2)
    assert one.powerwalls[0].serial != two.powerwalls[0].serial


@settings(max_examples=100, deadline=None)
@given(homes(), st.floats(-10_000.0, 10_000.0), st.floats(0.0, 10_000.0))
def test_pinned_flows_keep_the_balance(
    setup: tuple[HomeConfig, HomeState], site: float, solar: float
) -> None:
    config, state = setup
    pinned = dataclasses.replace(
        state, pins=dataclasses.replace(state.pins, site_power_w=site, solar_power_w=solar)
    )
    after = home.step(config, pinned, 10.0, random.Random(5))
    assert after.site_power_w == site
    assert after.solar_power_w == solar
    assert after.load_power_w == pytest.approx(site + after.battery_power_w + solar, abs=1e-6)


def test_solar_follows_the_sun() -> None:
    noon = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)  # 12:00 PDT is 11:00 standard time
    midnight = datetime(2026, 6, 21, 7, 0, tzinfo=UTC)
    assert home.clear_sky_fraction(noon, "America/Los_Angeles") > 0.7
    assert home.clear_sky_fraction(midnight, "America/Los_Angeles") == 0.0
    evening = home.clear_sky_fraction(datetime(2026, 6, 22, 2, 0, tzinfo=UTC), "America/Los_Angeles")
    assert 0.0 < evening < home.clear_sky_fraction(noon, "America/Los_Angeles")


def test_a_day_has_clouds_and_appliances() -> None:
    config = home.build_config("pw2", 1, 7)
    state = home.initial_state(config, START, "Test Home", "America/Los_Angeles")
    series = run(config, state, [60.0] * 24 * 60, 7)
    assert min(s.cloud_factor for s in series) < 1.0
    assert max(s.load_power_w for s in series) > config.base_load_w + 1500.0
    assert max(s.solar_power_w for s in series) > 2000.0
    assert not math.isnan(series[-1].battery_percentage)


def test_a_night_on_grid_stops_discharging_at_the_reserve() -> None:
    config = home.build_config("pw2", 2, 3)
    night = datetime(2026, 6, 21, 9, 0, tzinfo=UTC)
    state = home.initial_state(config, night, "Test Home", "America/Los_Angeles")
    state = dataclasses.replace(
        state,
        backup_reserve_percent=30.0,
        powerwalls=tuple(
            (serial, dataclasses.replace(pw, energy_remaining_wh=pw.full_pack_wh * 0.31))
            for serial, pw in state.powerwalls
        ),
    )
    series = run(config, state, [600.0] * 12, 3)
    assert series[1].battery_power_w > 0.0
    assert series[-1].battery_percentage == pytest.approx(30.0)
    assert series[-1].battery_power_w == 0.0
    assert series[-1].site_power_w == pytest.approx(series[-1].load_power_w)


@settings(max_examples=60, deadline=None)
@given(homes(), st.data())
def test_pinned_strings_still_add_up_to_the_solar_power(
    setup: tuple[HomeConfig, HomeState], data: st.DataObject
) -> None:
    config, state = setup
    names = config.string_names
    pinned = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    pins = tuple(
        (
            name,
            home.StringPin(
                connected=data.draw(st.sampled_from([None, True, False])),
                current_a=data.draw(st.one_of(st.none(), st.floats(0.0, 15.0))),
                voltage_v=data.draw(st.one_of(st.none(), st.floats(1.0, 600.0))),
            ),
        )
        for name in pinned
    )
    after = home.step(config, dataclasses.replace(state, pins=Pins(strings=pins)), 30.0, random.Random(6))
    readings = dict(after.strings)
    assert sum(r.power_w for r in readings.values()) == pytest.approx(after.solar_power_w, abs=1e-6)
    for name, reading in readings.items():
        assert reading.power_w == reading.voltage_v * reading.current_a
        if not reading.connected:
            assert reading.power_w == 0.0
        pin = dict(pins).get(name)
        if pin is not None and reading.connected and pin.current_a is not None:
            assert reading.current_a == pin.current_a
