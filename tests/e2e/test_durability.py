"""Issue 6 end to end: every reading reaches InfluxDB exactly once, whatever fails in between.

Real processes throughout: the simulated gateway, `serve`, InfluxDB 1.x over the v1 API and
VictoriaMetrics over the v2 API (deduplicating at 1 ms, so a duplicate would show).
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powerwall_service.sinks.store import Store
from tests.fixtures.influx_servers import InfluxServer, VictoriaMetricsServer, unique_name
from tests.fixtures.service_process import ServeProcess
from tests.fixtures.simulator import Simulator

ServeFactory = Callable[..., ServeProcess]
SimulatorFactory = Callable[..., Simulator]

POWER_FIELDS = ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w", "battery_percentage")


def stored_timestamps_ns(data_dir: Path) -> list[int]:
    """Every reading the stopped service kept in its local store, as ns since the epoch."""
    store = Store(data_dir / "store.db", retention_days=7, max_mb=500, influx_configured=True)
    store.open()
    try:
        now = datetime.now(UTC)
        readings = store.readings_between(["site_power_w"], now - timedelta(days=1), now)
    finally:
        store.close()
    return [r.timestamp_ns for r in readings]


def stop_cleanly(serve: ServeProcess) -> None:
    """SIGTERM ends `serve` within a few seconds (uvicorn re-raises the signal once shut down)."""
    started = time.monotonic()
    assert serve.process.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5


def outbox_empty(serve: ServeProcess) -> bool:
    store = serve.get("/status").json()["store"]
    return bool(store["readings"]) and store["outbox_depth"] == 0


def test_each_reading_arrives_once_with_the_truths_values_in_influxdb_1x_and_over_v2(
    simulator: SimulatorFactory,
    serve_factory: ServeFactory,
    influxd: InfluxServer,
    victoria_metrics: VictoriaMetricsServer,
) -> None:
    sim = simulator(flavour="pw2", firmware="23.28.2")
    truth = sim.state()
    database = influxd.create_database()
    vm_measurement = unique_name("pwe2e")
    common = {"PW_CUSTOMER_PASSWORD": sim.customer_password, "PW_POLL_INTERVAL": "0.5"}
    v1 = serve_factory(
        sim.host,
        INFLUX_URL=influxd.url,
        INFLUX_API="v1",
        INFLUX_DATABASE=database,
        **common,
    )
    v2 = serve_factory(
        sim.host,
        INFLUX_URL=victoria_metrics.url,
        INFLUX_API="v2",
        INFLUX_ORG="home",
        INFLUX_BUCKET="powerwall",
        INFLUX_TOKEN="vm-accepts-any-token",
        INFLUX_MEASUREMENT=vm_measurement,
        **common,
    )
    for serve in (v1, v2):
        serve.wait_for(lambda s=serve: s.get("/status").json()["successes"] >= 4, what="four readings")  # type: ignore[misc]
    sim.put_state(down=True)
    for serve in (v1, v2):
        serve.wait_for(lambda s=serve: outbox_empty(s), what="outbox drained")  # type: ignore[misc]
        writer = serve.get("/status").json()["influxdb"]
        assert writer["points_written"] >= 4
        assert writer["last_error"] is None
        stop_cleanly(serve)

    stored_v1 = stored_timestamps_ns(v1.data_dir)
    rows = influxd.rows(database, "powerwall")
    assert sorted(row["time"] for row in rows) == stored_v1
    for row in rows:
        for field in POWER_FIELDS:
            assert row[field] == pytest.approx(truth[field]), field
        assert row["site"] == truth["site_name"]

    stored_v2_ms = sorted(ts // 1_000_000 for ts in stored_timestamps_ns(v2.data_dir))
    series = victoria_metrics.wait_for(
        f"{vm_measurement}_site_power_w", lambda s: sum(len(x["timestamps"]) for x in s) >= len(stored_v2_ms)
    )
    assert sorted(ts for s in series for ts in s["timestamps"]) == stored_v2_ms
    values = [value for s in series for value in s["values"]]
    assert values == [pytest.approx(truth["site_power_w"])] * len(stored_v2_ms)


def test_influxdb_outage_and_a_kill_9_lose_no_reading_and_duplicate_none(
    simulator: SimulatorFactory, serve_factory: ServeFactory, influxd_factory: Callable[..., InfluxServer]
) -> None:
    interval = 1.0
    sim = simulator(flavour="pw2", firmware="23.28.2")
    influx = influxd_factory()
    database = influx.create_database()
    env = {
        "PW_CUSTOMER_PASSWORD": sim.customer_password,
        "PW_POLL_INTERVAL": str(interval),
        "INFLUX_URL": influx.url,
        "INFLUX_API": "v1",
        "INFLUX_DATABASE": database,
        "INFLUX_TIMEOUT": "2",
    }
    first = serve_factory(sim.host, **env)
    first.wait_for(lambda: first.get("/status").json()["successes"] >= 3, what="three readings")

    influx.stop()
    outage_started = time.monotonic()
    time.sleep(25)
    first.process.signal(signal.SIGKILL)
    killed_at = time.time_ns()
    first.process.proc.wait(timeout=10)  # type: ignore[union-attr]
    time.sleep(3)
    second = serve_factory(sim.host, data_dir=first.data_dir, **env)
    restarted_at = time.time_ns()
    time.sleep(max(0.0, 60 - (time.monotonic() - outage_started)))
    health = second.get("/health").json()
    assert health["components"]["influxdb"]["state"] == "degraded"
    influx.start()
    second.wait_for(lambda: outbox_empty(second), timeout=60, what="backlog drained")
    stop_cleanly(second)

    written = influx.timestamps(database, "powerwall")
    stored = stored_timestamps_ns(first.data_dir)
    assert written == stored, "InfluxDB must hold exactly the stored readings"
    assert len(written) == len(set(written)), "no timestamp twice"
    assert len(written) >= 55
    gaps = [
        (a, b)
        for a, b in itertools.pairwise(written)
        if b - a > 1.5 * interval * 1e9 and not (a <= killed_at <= b <= restarted_at + int(5e9))
    ]
    assert gaps == [], f"gaps outside the time the service was dead: {gaps}"


def test_slow_influxdb_does_not_delay_the_poll_schedule(
    simulator: SimulatorFactory,
    serve_factory: ServeFactory,
    influxd: InfluxServer,
    delay_proxy: Callable[[str, float], object],
) -> None:
    sim = simulator(flavour="pw2", firmware="23.28.2")
    database = influxd.create_database()
    proxy = delay_proxy(influxd.url, 2.0)
    serve = serve_factory(
        sim.host,
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        PW_POLL_INTERVAL="0.5",
        INFLUX_URL=proxy.url,  # type: ignore[attr-defined]
        INFLUX_API="v1",
        INFLUX_DATABASE=database,
    )
    serve.wait_for(lambda: serve.get("/status").json()["successes"] >= 20, timeout=30, what="20 polls")
    status = serve.get("/status").json()
    lag = status["poll_start_lag_seconds"]
    print(
        f"poll start lag with InfluxDB answering after 2 s: p50 {lag['p50'] * 1000:.2f} ms, "
        f"p99 {lag['p99'] * 1000:.2f} ms, max {lag['max'] * 1000:.2f} ms over {status['polls']} polls"
    )
    assert lag["p99"] < 0.25
    assert status["failures"] == 0


def test_a_second_serve_on_the_same_store_refuses_to_start(
    simulator: SimulatorFactory, serve_factory: ServeFactory
) -> None:
    sim = simulator(flavour="pw2", firmware="23.28.2")
    first = serve_factory(sim.host, PW_CUSTOMER_PASSWORD=sim.customer_password)
    second = serve_factory(
        sim.host, wait=False, data_dir=first.data_dir, PW_CUSTOMER_PASSWORD=sim.customer_password
    )
    assert second.process.proc is not None
    assert second.process.proc.wait(timeout=30) != 0
    assert "store" in second.log().lower()
    assert "in use" in second.log().lower() or "another" in second.log().lower()
    assert first.alive()
