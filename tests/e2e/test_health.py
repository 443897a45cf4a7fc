"""/health tells the truth: 503 naming the broken part while the gateway, InfluxDB or the store fail,
200 again once they recover, 503 `starting` before the first poll, and an answer at once even while
the gateway hangs. /health/live stays 200 throughout: the loop runs, so a restart would not help.

Each test breaks something real: the simulator goes down or hangs, influxd is stopped, and the
store's disk is "full" (the service's file-size limit is lowered to one byte with prlimit, so
SQLite's writes fail with EFBIG exactly as on a full disk).
"""

from __future__ import annotations

import contextlib
import resource
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.influx_servers import InfluxServer
from tests.fixtures.processes import ManagedProcess
from tests.fixtures.service_process import ServeProcess, start_serve
from tests.fixtures.simulator import Simulator, start_simulator

ANSWER_AT_ONCE_S = 0.5
STOP_WITHIN_S = 5.0


def timed_health(serve: ServeProcess) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    answer = serve.get("/health")
    return answer.status_code, answer.json(), time.monotonic() - started


def states(body: dict[str, Any]) -> dict[str, str]:
    return {name: component["state"] for name, component in body["components"].items()}


@pytest.fixture
def sim(simulator: Callable[..., Simulator]) -> Simulator:
    gateway: Simulator = simulator()
    return gateway


def test_before_the_first_poll_health_is_503_starting_and_answers_at_once(
    serve_factory: Callable[..., ServeProcess], sim: Simulator
) -> None:
    sim.put_state(hang=True)
    serve = serve_factory(sim.host, PW_CUSTOMER_PASSWORD=sim.customer_password, PW_REQUEST_TIMEOUT="5")
    status, body, elapsed = timed_health(serve)
    assert status == 503
    assert elapsed < ANSWER_AT_ONCE_S
    assert body["healthy"] is False
    assert body["components"]["powerwall"]["state"] == "starting"
    assert body["last_success_time"] is None
    assert "no reading yet" in body["reasons"]
    assert serve.get("/snapshot").status_code == 404
    assert serve.get("/health/live").status_code == 200

    sim.put_state(hang=False)
    body = serve.wait_for_health(200, timeout=20)
    assert body["components"]["powerwall"]["state"] == "ok"

    serve.process.signal(signal.SIGINT)  # Ctrl-C: a clean stop, not a traceback
    assert serve.process.proc is not None
    assert serve.process.proc.wait(timeout=STOP_WITHIN_S) == 0
    assert "Traceback" not in serve.log()


@pytest.fixture(scope="module")
def shared(
    module_processes: Callable[..., ManagedProcess], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServeProcess, Simulator]:
    """One service for the tests that break the gateway or the store and then repair them."""
    gateway = start_simulator(module_processes)
    serve = start_serve(
        module_processes,
        gateway.host,
        tmp_path_factory.mktemp("health"),
        PW_CUSTOMER_PASSWORD=gateway.customer_password,
        PW_REQUEST_TIMEOUT="3",
        PW_LOG_LEVEL="ERROR",
    )
    return serve, gateway


@pytest.mark.parametrize("fault", ["down", "hang"])
def test_gateway_failure_makes_health_503_naming_powerwall_then_200(
    shared: tuple[ServeProcess, Simulator], fault: str
) -> None:
    serve, sim = shared
    serve.wait_for_health(200, timeout=30)

    sim.put_state(**{fault: True})
    body = serve.wait_for_health(503)
    if fault == "hang":
        # Before PW_REQUEST_TIMEOUT gives up on the hung call, only the reading's age tells.
        assert states(body)["powerwall"] == "ok"
        assert any("old" in reason for reason in body["reasons"]), body["reasons"]
    else:
        assert any(reason.startswith("powerwall is down") for reason in body["reasons"]), body["reasons"]
    _, body, elapsed = timed_health(serve)
    assert elapsed < ANSWER_AT_ONCE_S, "health must not wait for the gateway"
    assert serve.get("/health/live").status_code == 200
    serve.wait_for(lambda: states(serve.get("/health").json())["powerwall"] == "down", what="powerwall down")
    body = serve.get("/health").json()
    assert body["consecutive_failures"] >= 1
    assert body["components"]["powerwall"]["last_error"]
    assert body["components"]["store"]["state"] == "ok"

    sim.put_state(**{fault: False})
    body = serve.wait_for_health(200, timeout=30)
    assert states(body)["powerwall"] == "ok"
    assert body["consecutive_failures"] == 0


def test_influxdb_down_is_degraded_while_the_store_buffers_then_drains(
    serve_factory: Callable[..., ServeProcess],
    sim: Simulator,
    influxd_factory: Callable[..., InfluxServer],
) -> None:
    influx = influxd_factory()
    database = influx.create_database()
    serve = serve_factory(
        sim.host,
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        INFLUX_URL=influx.url,
        INFLUX_API="v1",
        INFLUX_DATABASE=database,
        INFLUX_TIMEOUT="1",
    )
    body = serve.wait_for_health(200, timeout=20)
    assert states(body)["influxdb"] == "ok"

    influx.stop()
    body = serve.wait_for_health(503, timeout=20)
    assert states(body)["influxdb"] == "degraded"
    assert states(body)["powerwall"] == "ok"
    assert any(reason.startswith("influxdb is degraded") for reason in body["reasons"])
    assert serve.get("/health/live").status_code == 200
    serve.wait_for(lambda: serve.get("/status").json()["store"]["outbox_depth"] > 2, what="readings buffered")

    influx.restart()
    body = serve.wait_for_health(200, timeout=30)
    assert states(body)["influxdb"] == "ok"
    serve.wait_for(lambda: serve.get("/status").json()["store"]["outbox_depth"] <= 1, what="outbox drained")


@pytest.fixture
def restore_limits() -> Iterator[list[int]]:
    """Pids whose file-size limit a test lowers; set back to the hard limit whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def test_a_full_store_makes_health_503_naming_the_store_and_polling_goes_on(
    shared: tuple[ServeProcess, Simulator], restore_limits: list[int]
) -> None:
    serve, _ = shared
    serve.wait_for_health(200, timeout=30)
    pid = serve.process.pid
    restore_limits.append(pid)
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
    body = serve.wait_for_health(503)
    assert states(body)["store"] == "down"
    assert states(body)["powerwall"] == "ok"
    assert any(reason.startswith("store is down") for reason in body["reasons"])
    assert serve.get("/health/live").status_code == 200
    successes = serve.get("/status").json()["successes"]
    serve.wait_for(lambda: serve.get("/status").json()["successes"] > successes + 2, what="polling goes on")

    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    body = serve.wait_for_health(200, timeout=40)
    assert states(body)["store"] == "ok"


def test_a_store_that_cannot_be_opened_is_down_and_polling_goes_on(
    serve_factory: Callable[..., ServeProcess], sim: Simulator, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    serve = serve_factory(
        sim.host, PW_CUSTOMER_PASSWORD=sim.customer_password, STORE_PATH=str(not_a_directory / "store.db")
    )
    serve.wait_for(lambda: serve.get("/status").json()["successes"] >= 3, what="polling without a store")
    answer = serve.get("/health")
    assert answer.status_code == 503
    body = answer.json()
    assert states(body)["store"] == "down"
    assert states(body)["powerwall"] == "ok"
    assert any(reason.startswith("store is down") for reason in body["reasons"])
    assert serve.get("/health/live").status_code == 200
    assert serve.get("/snapshot").status_code == 200
    history = serve.get("/history", params={"metric": "site_power_w", "since": "2026-01-01T00:00:00Z"})
    assert history.status_code == 503
    assert "local store is not available" in history.json()["detail"]
