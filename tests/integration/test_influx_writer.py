"""The InfluxDB writer against real servers: InfluxDB 1.6.7 over v1, VictoriaMetrics over v2.

What a user would see is checked in the databases themselves: each reading once, with its values
and types; tricky site names and alert texts exactly as sent; rejected points set aside with the
server's reason; nothing lost or doubled across bad credentials and server restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powerwall_service.config import Settings
from powerwall_service.health import Component, State
from powerwall_service.reading import Reading
from powerwall_service.sinks.influx import InfluxWriteError, InfluxWriter, push_once
from powerwall_service.sinks.line_protocol import point_line, stored_tag_value
from powerwall_service.sinks.store import AsyncStore, Store
from tests.fixtures.influx_servers import DelayProxy, InfluxServer, VictoriaMetricsServer, unique_name

TRICKY_SITES = [
    "Home/Garage",
    "my home, east=1",
    'the "big" house',
    "C:\\power\\wall",
    "a\\,b\\ c\\=d",
    "Zuhause ☀ Straße 5",
    "家",
    "=,= ,",
]
ALERT_TEXTS = ['grid "down"; C:\\temp\\', "line one\nline two\r\nthree", "semi;colon,comma=eq"]


def v1_settings(server: InfluxServer, db: str, **changes: Any) -> Settings:
    base = Settings(influx_url=server.url, influx_api="v1", influx_database=db, influx_timeout=5.0)
    return dataclasses.replace(base, **changes)


def v2_settings(server: VictoriaMetricsServer, measurement: str) -> Settings:
    return Settings(
        influx_url=server.url,
        influx_api="v2",
        influx_bucket="powerwall",
        influx_org="home",
        influx_token="any-token",
        influx_measurement=measurement,
        influx_timeout=5.0,
    )


def readings(count: int, site: str = "home", start: datetime | None = None) -> list[Reading]:
    first = start or datetime.now(UTC).replace(microsecond=123456) - timedelta(seconds=count + 5)
    return [
        Reading(
            first + timedelta(seconds=i),
            site,
            {
                "load_power_w": 1000.5 + i,
                "alerts_count": i,
                "grid_connected": i % 2 == 0,
                "grid_status": "UP",
            },
            {"SN-A": {"battery_soe": 50.0 + i}},
        )
        for i in range(count)
    ]


@contextlib.asynccontextmanager
async def running_writer(
    settings_: Settings, store_path: Path
) -> AsyncIterator[tuple[InfluxWriter, AsyncStore]]:
    store = AsyncStore(Store(store_path, 7, 100, influx_configured=True), Component("store"))
    await store.open()
    writer = InfluxWriter(settings_, store, Component("influxdb"), max_backoff=0.5)
    task = asyncio.create_task(writer.run())
    try:
        yield writer, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def until(check: Callable[[], Any], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def append_all(store: AsyncStore, writer: InfluxWriter, items: list[Reading]) -> None:
    for reading in items:
        await store.append(reading)
        writer.notify()


async def drained(store: AsyncStore) -> bool:
    return (await store.status()).outbox_depth == 0


async def test_v1_each_reading_arrives_once_with_its_values_and_types(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = influxd.create_database()
    sent = readings(25)
    async with running_writer(v1_settings(influxd, db), tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent)
        await until(lambda: drained(store))
        assert writer.health.view().state is State.OK
    rows = influxd.rows(db, "powerwall")
    assert [row["time"] for row in rows] == [r.timestamp_ns for r in sent]
    assert [
        (row["site"], row["load_power_w"], row["alerts_count"], row["grid_connected"], row["grid_status"])
        for row in rows
    ] == [("home", 1000.5 + i, i, i % 2 == 0, "UP") for i in range(25)]
    fields = influxd.query('SHOW FIELD KEYS FROM "powerwall"', db=db)["results"][0]["series"][0]["values"]
    assert dict(map(tuple, fields)) == {
        "alerts_count": "integer",
        "grid_connected": "boolean",
        "grid_status": "string",
        "load_power_w": "float",
    }
    battery = influxd.rows(db, "powerwall_battery")
    assert [(row["serial"], row["site"], row["battery_soe"]) for row in battery] == [
        ("SN-A", "home", 50.0 + i) for i in range(25)
    ]


async def test_tricky_site_names_and_alert_texts_round_trip(influxd: InfluxServer, tmp_path: Path) -> None:
    db = influxd.create_database()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sent = [
        Reading(start + timedelta(seconds=i), site, {"alerts": ALERT_TEXTS[i % len(ALERT_TEXTS)]})
        for i, site in enumerate(TRICKY_SITES)
    ]
    async with running_writer(v1_settings(influxd, db), tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent)
        await until(lambda: drained(store))
    rows = influxd.rows(db, "powerwall")
    assert [(row["site"], row["alerts"]) for row in rows] == [(r.site, r.fields["alerts"]) for r in sent]


_round_trip_times = itertools.count(17_000_000_000_000_000)
_round_trip_servers: set[str] = set()
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.tuples(_text, _text), min_size=1, max_size=8))
def test_any_site_and_alert_text_round_trip_through_influxdb_1x(
    influxd: InfluxServer, texts: list[tuple[str, str]]
) -> None:
    """Property: InfluxDB stores exactly the text (a tag: newlines as spaces, no trailing backslash)."""
    db = "roundtrip"
    if influxd.url not in _round_trip_servers:
        influxd.query(f'CREATE DATABASE "{db}"')
        _round_trip_servers.add(influxd.url)
    first = next(_round_trip_times) * 100
    lines = [
        point_line("rt", {"site": site}, {"alerts": alert}, first + i)
        for i, (site, alert) in enumerate(texts)
    ]
    response = influxd.write(db, "\n".join(line for line in lines if line is not None))
    assert response.status_code == 204, response.text
    query = f'SELECT * FROM "rt" WHERE time >= {first} AND time < {first + 100}'  # noqa: S608 - InfluxQL
    rows = influxd.query(query, db=db)
    series = rows["results"][0]["series"][0]
    stored = [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]
    assert [(row.get("site"), row["alerts"]) for row in stored] == [
        (stored_tag_value(site) or None, alert) for site, alert in texts
    ]


async def test_a_rejected_point_is_set_aside_with_its_reason_and_the_rest_arrive(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = influxd.create_database()
    sent = readings(12)
    first = sent[0].timestamp_ns - 1
    # Type conflicts are per shard in InfluxDB 1.x: make the integer field in the readings' shard.
    assert influxd.write(db, f"powerwall,site=home conflict=1i {first}").status_code == 204
    bad = 7
    sent[bad] = dataclasses.replace(sent[bad], fields={**sent[bad].fields, "conflict": 1.5})
    async with running_writer(v1_settings(influxd, db), tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent)
        await until(lambda: drained(store))
        aside = await store.set_aside_points()
        status = await store.status()
    assert len(aside) == 1
    assert aside[0].timestamp == sent[bad].timestamp
    assert "field type conflict" in aside[0].reason
    assert aside[0].point.startswith("powerwall,site=home ")
    assert status.set_aside == 1
    times = [t for t in influxd.timestamps(db, "powerwall") if t != first]
    assert times == [r.timestamp_ns for i, r in enumerate(sent) if i != bad]
    assert influxd.timestamps(db, "powerwall_battery") == [r.timestamp_ns for r in sent]


async def test_wrong_credentials_are_reported_and_fixed_ones_drain_the_store(
    influxd_factory: Callable[..., InfluxServer], tmp_path: Path
) -> None:
    server = influxd_factory(auth=True)
    db = server.create_database()
    server.create_user("writer", "right-pass", write_on=db)
    sent = readings(10)
    wrong = v1_settings(server, db, influx_username="writer", influx_password="wrong-pass")
    async with running_writer(wrong, tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent)
        await until(lambda: _async(writer.health.view().state is State.DEGRADED))
        view = writer.health.view()
        status = await store.status()
    assert view.last_error is not None
    assert "refused the credentials (401: authorization failed)" in view.last_error
    assert "INFLUX_USERNAME/INFLUX_PASSWORD" in view.last_error
    assert "wrong-pass" not in view.last_error
    assert status.outbox_depth == 10
    assert server.timestamps(db, "powerwall") == []
    right = v1_settings(server, db, influx_username="writer", influx_password="right-pass")
    async with running_writer(right, tmp_path / "s.db") as (writer, store):
        await until(lambda: drained(store))
        assert writer.health.view().state is State.OK
    assert server.timestamps(db, "powerwall") == [r.timestamp_ns for r in sent]


async def test_v1_backlog_drains_after_influxdb_restarts_without_duplicates(
    influxd_factory: Callable[..., InfluxServer], tmp_path: Path
) -> None:
    server = influxd_factory()
    db = server.create_database()
    sent = readings(30)
    async with running_writer(v1_settings(server, db), tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent[:10])
        await until(lambda: drained(store))
        await asyncio.to_thread(server.stop)
        await append_all(store, writer, sent[10:])
        await until(lambda: _async(writer.health.view().state is State.DEGRADED))
        assert "unreachable" in (writer.health.view().last_error or "")
        assert (await store.status()).outbox_depth == 20
        await asyncio.to_thread(server.start)
        await until(lambda: drained(store))
    assert server.timestamps(db, "powerwall") == [r.timestamp_ns for r in sent]


async def test_v2_to_victoriametrics_each_reading_once_across_a_restart(
    vm_factory: Callable[[], VictoriaMetricsServer], tmp_path: Path
) -> None:
    server = vm_factory()
    measurement = unique_name("pw")
    sent = readings(40)
    async with running_writer(v2_settings(server, measurement), tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, sent[:15])
        await until(lambda: drained(store))
        await asyncio.to_thread(server.stop)
        await append_all(store, writer, sent[15:])
        await until(lambda: _async(writer.health.view().state is State.DEGRADED))
        await asyncio.to_thread(server.start)
        await until(lambda: drained(store))
    expected = [r.timestamp_ns // 1_000_000 for r in sent]
    series = await asyncio.to_thread(
        server.wait_for, f"{measurement}_load_power_w", lambda s: sum(len(x["timestamps"]) for x in s) >= 40
    )
    assert len(series) == 1
    assert series[0]["metric"] == {"__name__": f"{measurement}_load_power_w", "site": "home"}
    assert sorted(series[0]["timestamps"]) == expected
    assert [v for _, v in sorted(zip(series[0]["timestamps"], series[0]["values"], strict=True))] == [
        1000.5 + i for i in range(40)
    ]
    battery = await asyncio.to_thread(
        server.wait_for,
        f"{measurement}_battery_battery_soe",
        lambda s: sum(len(x["timestamps"]) for x in s) >= 40,
    )
    assert sorted(t for s in battery for t in s["timestamps"]) == expected


async def test_resending_the_same_reading_does_not_duplicate(
    victoria_metrics: VictoriaMetricsServer, influxd: InfluxServer
) -> None:
    measurement = unique_name("dup")
    db = influxd.create_database()
    reading = readings(1)[0]
    for _ in range(3):
        await push_once(v2_settings(victoria_metrics, measurement), reading)
        await push_once(v1_settings(influxd, db, influx_measurement=measurement), reading)
    await asyncio.sleep(1.5)
    times = await asyncio.to_thread(victoria_metrics.timestamps, f"{measurement}_load_power_w")
    assert times == [reading.timestamp_ns // 1_000_000]
    assert influxd.timestamps(db, measurement) == [reading.timestamp_ns]


async def test_push_once_raises_a_one_line_reason(influxd: InfluxServer) -> None:
    with pytest.raises(InfluxWriteError, match=r'answered 404: database not found: "no_such_db"$'):
        await push_once(v1_settings(influxd, "no_such_db"), readings(1)[0])


async def test_a_server_error_is_retried_with_its_reason_in_health(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = influxd.create_database()
    sent = readings(3)
    async with running_writer(
        v1_settings(influxd, db, influx_retention_policy="nope"), tmp_path / "s.db"
    ) as (
        writer,
        store,
    ):
        await append_all(store, writer, sent)
        await until(lambda: _async(writer.health.view().state is State.DEGRADED))
        await asyncio.sleep(1.2)
        assert (await store.status()).outbox_depth == 3
    assert (
        writer.health.view().last_error
        == "InfluxDB at 127.0.0.1 answered 500: retention policy not found: nope"
    )
    assert writer.health.view().detail == "readings are kept in the local store"


async def test_an_untrusted_certificate_names_the_setting(simulator: Callable[..., Any]) -> None:
    gateway = simulator()
    https = Settings(influx_url=gateway.base_url, influx_api="v1", influx_database="d", influx_timeout=5.0)
    with pytest.raises(InfluxWriteError, match=r"TLS certificate not trusted.*INFLUX_VERIFY_TLS=false"):
        await push_once(https, readings(1)[0])
    with pytest.raises(InfluxWriteError, match="answered 404"):
        await push_once(dataclasses.replace(https, influx_verify_tls=False), readings(1)[0])


async def test_retry_after_is_honoured(simulator: Callable[..., Any], tmp_path: Path) -> None:
    """An HTTP server that answers 429 with Retry-After (the simulator's fault injection; any other
    path of it answers 404, so the retry shows as a change of reason)."""
    server = simulator()
    server.add_fault(path="/write", status=429, retry_after=2.5, count=1)
    https = Settings(
        influx_url=server.base_url,
        influx_api="v1",
        influx_database="d",
        influx_verify_tls=False,
        influx_timeout=5.0,
    )
    loop = asyncio.get_running_loop()
    async with running_writer(https, tmp_path / "s.db") as (writer, store):
        await append_all(store, writer, readings(1))
        await until(lambda: _async("answered 429" in (writer.health.view().last_error or "")))
        limited = loop.time()
        await until(lambda: _async("answered 404" in (writer.health.view().last_error or "")))
        waited = loop.time() - limited
        assert (await store.status()).outbox_depth == 1
    assert 2.3 < waited < 4.0


async def test_a_slow_influxdb_does_not_slow_the_store(
    influxd: InfluxServer, delay_proxy: Callable[[str, float], DelayProxy], tmp_path: Path
) -> None:
    db = influxd.create_database()
    proxy = delay_proxy(influxd.url, 1.0)
    sent = readings(5)
    loop = asyncio.get_running_loop()
    async with running_writer(v1_settings(influxd, db, influx_url=proxy.url), tmp_path / "s.db") as (
        writer,
        store,
    ):
        slowest = 0.0
        for r in sent:
            started = loop.time()
            await store.append(r)
            writer.notify()
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0.2)
        await until(lambda: drained(store))
    assert slowest < 0.5, "an append waited for the slow InfluxDB"
    assert proxy.requests >= 1
    assert influxd.timestamps(db, "powerwall") == [r.timestamp_ns for r in sent]


async def _async(value: bool) -> bool:
    return value
