"""Every endpoint through real HTTP against `serve` polling a frozen simulator: values equal the truth.

One service and one simulator are shared by the module (the tests only read, or read live with
the rate limit off); the rate-limit test has its own pair, because it counts the requests the
gateway receives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from powerwall_service import __version__
from tests.fixtures.processes import ManagedProcess
from tests.fixtures.service_process import ServeProcess, start_serve
from tests.fixtures.simulator import Simulator, start_simulator

CORE = ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w", "battery_percentage")


@pytest.fixture(scope="module")
def sim(module_processes: Callable[..., ManagedProcess]) -> Simulator:
    simulator: Simulator = start_simulator(module_processes, flavour="pw2", powerwalls=2)
    return simulator


@pytest.fixture(scope="module")
def truth(sim: Simulator) -> dict[str, Any]:
    state: dict[str, Any] = sim.state()
    return state


@pytest.fixture(scope="module")
def serve(
    module_processes: Callable[..., ManagedProcess], sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> ServeProcess:
    service = start_serve(
        module_processes,
        sim.host,
        tmp_path_factory.mktemp("api"),
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        PW_POLL_INTERVAL="0.5",
        PW_CACHE_EXPIRE="0",
    )
    service.wait_for_health(200)
    return service


def assert_truth(reading: dict[str, Any], truth: dict[str, Any]) -> None:
    fields = reading["fields"]
    for name in CORE:
        assert fields[name] == pytest.approx(truth[name], abs=0.01), name
    assert truth["grid_status"] == "SystemGridConnected"
    assert fields["grid_status"] == "UP"
    assert fields["grid_status_code"] == 1
    assert fields["din"] == truth["din"]
    assert reading["site"] == truth["site_name"]
    assert set(reading["units"]) == set(truth["powerwalls"])
    for serial, unit in truth["powerwalls"].items():
        got = reading["units"][serial]
        assert got["nominal_full_pack_energy_wh"] == pytest.approx(unit["nominal_full_pack_energy_wh"], abs=1)


def test_banner_names_the_service_and_its_version(serve: ServeProcess) -> None:
    answer = serve.get("/")
    assert answer.status_code == 200
    assert answer.json()["version"] == __version__
    assert {"/health", "/history", "/metrics", "/snapshot/live"} <= set(answer.json()["endpoints"])


def test_openapi_describes_every_endpoint(serve: ServeProcess) -> None:
    paths = serve.get("/openapi.json").json()["paths"]
    expected = {"/", "/health", "/health/live", "/config", "/snapshot", "/snapshot/live", "/poll", "/status"}
    assert expected | {"/history", "/metrics"} <= set(paths)
    assert "post" in paths["/poll"]


def test_config_shows_the_effective_settings_with_secrets_masked(serve: ServeProcess, sim: Simulator) -> None:
    config = serve.get("/config").json()
    assert config["PW_HOST"] == sim.host
    assert config["PW_POLL_INTERVAL"] == 0.5
    assert config["PW_CUSTOMER_PASSWORD"] == "***"
    assert config["API_TOKEN"] is None
    assert sim.customer_password not in serve.get("/config").text


def test_snapshot_is_the_latest_reading_and_equals_the_truth(
    serve: ServeProcess, truth: dict[str, Any]
) -> None:
    answer = serve.get("/snapshot")
    assert answer.status_code == 200
    body = answer.json()
    assert 0 <= body["age_seconds"] < 1.5
    assert_truth(body["reading"], truth)


def test_health_is_ok_with_every_component_named(serve: ServeProcess) -> None:
    answer = serve.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["healthy"] is True
    assert body["reasons"] == []
    states = {name: c["state"] for name, c in body["components"].items()}
    assert states == {
        "powerwall": "ok",
        "store": "ok",
        "influxdb": "disabled",
        "mqtt": "disabled",
        "wifi": "disabled",
    }
    assert body["background_task_running"] is True
    assert body["consecutive_failures"] == 0
    assert body["last_reading_age_seconds"] < 1.5
    assert serve.get("/health/live").json() == {"alive": True}


def stored_at(serve: ServeProcess, timestamp: str) -> list[dict[str, Any]]:
    moment = datetime.fromisoformat(timestamp)
    since = (moment - timedelta(microseconds=1)).isoformat()
    until = (moment + timedelta(microseconds=1)).isoformat()
    answer = serve.get("/history", params={"metric": "site_power_w", "since": since, "until": until})
    assert answer.status_code == 200, answer.text
    points: list[dict[str, Any]] = answer.json()["series"]["site_power_w"]
    return points


def test_live_reads_equal_the_truth_and_are_stored_only_when_asked(
    serve: ServeProcess, truth: dict[str, Any]
) -> None:
    kept = serve.get("/snapshot/live")
    assert kept.status_code == 200
    assert kept.json()["stored"] is True
    assert_truth(kept.json()["reading"], truth)

    not_kept = serve.get("/snapshot/live", params={"push_to_influx": "false"})
    assert not_kept.status_code == 200
    assert not_kept.json()["stored"] is False
    assert_truth(not_kept.json()["reading"], truth)

    polled = serve.post("/poll", json={"push_to_influx": False})
    assert polled.status_code == 200
    assert polled.json()["stored"] is False
    posted_default = serve.post("/poll")
    assert posted_default.status_code == 200
    assert posted_default.json()["stored"] is True

    assert len(stored_at(serve, kept.json()["reading"]["timestamp"])) == 1
    assert stored_at(serve, not_kept.json()["reading"]["timestamp"]) == []
    assert stored_at(serve, polled.json()["reading"]["timestamp"]) == []
    assert len(stored_at(serve, posted_default.json()["reading"]["timestamp"])) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"push_to_influx": "perhaps"}, "push_to_influx"),
        ({"push_to_influx": True, "extra": 1}, "extra"),
        ({"publish_mqtt": True}, "MQTT is not enabled"),
        ([1, 2], "body"),
    ],
)
def test_bad_poll_requests_get_422_with_the_reason(serve: ServeProcess, body: Any, reason: str) -> None:
    answer = serve.post("/poll", json=body)
    assert answer.status_code == 422
    assert reason in answer.json()["detail"]


def test_status_counts_polls_and_gateway_requests_as_the_gateway_saw_them(
    serve: ServeProcess, sim: Simulator
) -> None:
    before = serve.get("/status").json()
    seen = sum(int(n) for n in sim.requests().values())
    after = serve.get("/status").json()
    assert before["gateway_requests"] <= seen <= after["gateway_requests"]
    assert after["polls"] >= after["successes"] > 0
    assert after["failures"] == 0
    assert after["background_task_running"] is True
    assert after["poll_duration_seconds"]["p50"] > 0
    assert after["poll_start_lag_seconds"]["p99"] < 0.5
    store = after["store"]
    assert store["readings"] >= 1
    assert store["outbox_depth"] is None
    assert store["set_aside"] == 0
    assert after["set_aside_points"] == []


def test_history_returns_the_stored_readings_raw_and_averaged(
    serve: ServeProcess, truth: dict[str, Any]
) -> None:
    # A range that ended a second ago: every reading in it is stored by now, so both asks agree.
    time.sleep(1.0)
    until = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    raw = serve.get(
        "/history", params={"metric": ["site_power_w", "battery_percentage"], "since": since, "until": until}
    )
    assert raw.status_code == 200
    series = raw.json()["series"]
    readings = serve.get("/status").json()["store"]["readings"]
    assert 0 < len(series["site_power_w"]) <= readings
    assert all(p["value"] == pytest.approx(truth["site_power_w"], abs=0.01) for p in series["site_power_w"])
    assert all(
        p["value"] == pytest.approx(truth["battery_percentage"], abs=0.01)
        for p in series["battery_percentage"]
    )
    times = [p["time"] for p in series["site_power_w"]]
    assert times == sorted(times)

    averaged = serve.get(
        "/history", params={"metric": "site_power_w", "since": since, "until": until, "step": 7200}
    ).json()["series"]["site_power_w"]
    assert len(averaged) == 1
    assert averaged[0]["value"] == pytest.approx(truth["site_power_w"], abs=0.01)
    assert averaged[0]["count"] == len(series["site_power_w"])


def test_history_beyond_the_stored_time_range_is_cut_to_it(serve: ServeProcess) -> None:
    answer = serve.get(
        "/history",
        params={
            "metric": "site_power_w",
            "since": "0215-05-17T17:06:10.5+00:31",
            "until": "9999-01-01T00:00:00Z",
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["since"].startswith("1678-")
    assert body["until"].startswith("2262-")
    assert len(body["series"]["site_power_w"]) > 0


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"metric": "no_such_metric", "since": "2026-01-01T00:00:00Z"}, "no_such_metric"),
        ({"metric": "site_power_w", "since": "yesterday"}, "since"),
        (
            {"metric": "site_power_w", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "until",
        ),
        ({"metric": "grid_status", "since": "2026-01-01T00:00:00Z", "step": 60}, "cannot be averaged"),
        ({"metric": "site_power_w", "since": "2026-01-01T00:00:00Z", "step": 0}, "step"),
        ({"since": "2026-01-01T00:00:00Z"}, "metric"),
    ],
)
def test_bad_history_requests_get_422_naming_the_problem(
    serve: ServeProcess, params: dict[str, Any], reason: str
) -> None:
    answer = serve.get("/history", params=params)
    assert answer.status_code == 422
    assert reason in answer.json()["detail"]


def test_metrics_parse_and_carry_the_truth(serve: ServeProcess, truth: dict[str, Any]) -> None:
    answer = serve.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    site = families["powerwall_site_power_w"]
    assert site.type == "gauge"
    assert site.samples[0].labels == {"site": truth["site_name"]}
    assert site.samples[0].value == pytest.approx(truth["site_power_w"], abs=0.01)
    assert families["powerwall_battery_percentage"].samples[0].value == pytest.approx(
        truth["battery_percentage"], abs=0.01
    )
    assert families["powerwall_site_energy_imported_wh"].type == "counter"
    grid = families["powerwall_grid_status_info"]
    assert grid.samples[0].labels["value"] == "UP"
    units = families["powerwall_unit_nominal_full_pack_energy_wh"]
    assert {s.labels["serial"] for s in units.samples} == set(truth["powerwalls"])
    assert families["powerwall_service_polls"].samples[0].value >= 1
    assert families["powerwall_service_healthy"].samples[0].value == 1
    assert families["powerwall_store_readings"].samples[0].value >= 1


def test_a_second_live_read_within_cache_expire_gets_429_and_no_gateway_request(
    serve_factory: Callable[..., ServeProcess], simulator: Callable[..., Simulator]
) -> None:
    quiet_sim = simulator()
    expire = 2.0
    service = serve_factory(
        quiet_sim.host,
        PW_CUSTOMER_PASSWORD=quiet_sim.customer_password,
        PW_POLL_INTERVAL="3600",
        PW_CACHE_EXPIRE=str(expire),
    )
    service.wait_for(lambda: service.get("/snapshot").status_code == 200, what="first reading")
    time.sleep(expire)  # past pypowerwall's own cache, so a live read really reaches the gateway

    def sent() -> int:
        return sum(int(n) for n in quiet_sim.requests().values())

    before = sent()
    first = service.get("/snapshot/live")
    assert first.status_code == 200
    after_first = sent()
    assert after_first > before

    second = service.get("/snapshot/live")
    assert second.status_code == 429
    assert 1 <= int(second.headers["retry-after"]) <= expire
    assert "PW_CACHE_EXPIRE" in second.json()["detail"]
    assert service.post("/poll").status_code == 429
    assert sent() == after_first

    time.sleep(int(second.headers["retry-after"]))
    assert service.post("/poll").status_code == 200
    assert sent() > after_first


def test_serve_reload_runs_the_app_with_the_same_configuration_and_stops_on_sigterm(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    service = serve_factory("127.0.0.1:9", args=["--reload"], PW_CUSTOMER_PASSWORD="x", PW_POLL_INTERVAL="7")
    config = service.get("/config").json()
    assert config["PW_POLL_INTERVAL"] == 7.0
    assert config["PW_HOST"] == "127.0.0.1:9"
    stopping = time.monotonic()
    assert service.process.stop() == 0
    assert time.monotonic() - stopping < 5.0
    assert "Will watch for changes" in service.log()
