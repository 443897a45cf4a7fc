"""Safe defaults of `serve`: no open API without a token, the token enforced, one service per store,
and no secret in any log line, response or error, even at DEBUG.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from tests.fixtures.influx_servers import VictoriaMetricsServer
from tests.fixtures.processes import PYTHON, ManagedProcess, free_port
from tests.fixtures.service_process import ServeProcess, serve_env, start_serve
from tests.fixtures.simulator import Simulator, start_simulator

SERVE = [PYTHON, "-m", "powerwall_service.cli", "serve"]
TOKEN = "tok-Zq8v1Lr4Wc0x"
READ_ONLY_PAGES = (
    "/",
    "/health",
    "/health/live",
    "/config",
    "/snapshot",
    "/status",
    "/metrics",
    "/openapi.json",
)
STOP_WITHIN_S = 5.0


def exit_of(process: ManagedProcess, timeout: float = 30.0) -> int:
    assert process.proc is not None
    return process.proc.wait(timeout=timeout)


@pytest.mark.parametrize(
    ("env", "argv"),
    [
        pytest.param({"API_HOST": "0.0.0.0"}, [], id="API_HOST"),
        pytest.param({}, ["--host", "0.0.0.0"], id="--host"),
        pytest.param({"API_HOST": "192.168.1.10"}, [], id="lan-address"),
    ],
)
def test_api_beyond_loopback_without_token_refuses_to_start(
    process_factory: Callable[..., ManagedProcess], tmp_path: Path, env: dict[str, str], argv: list[str]
) -> None:
    process = process_factory(
        "serve",
        SERVE + argv,
        env=serve_env("127.0.0.1:9", tmp_path, free_port(), PW_CUSTOMER_PASSWORD="x", **env),
        cwd=tmp_path,
    )
    assert exit_of(process) == 2
    lines = process.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert "0.0.0.0" in lines[0] or "192.168.1.10" in lines[0]
    assert "API_TOKEN" in lines[0]


def test_serve_without_a_gateway_password_refuses_to_start_naming_both_keys(
    process_factory: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    process = process_factory(
        "serve", SERVE, env=serve_env("127.0.0.1:9", tmp_path, free_port()), cwd=tmp_path
    )
    assert exit_of(process) == 2
    lines = process.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert "PW_CUSTOMER_PASSWORD" in lines[0]
    assert "PW_GATEWAY_PASSWORD" in lines[0]


@pytest.fixture(scope="module")
def guarded(
    module_processes: Callable[..., ManagedProcess], tmp_path_factory: pytest.TempPathFactory
) -> ServeProcess:
    """A service with API_TOKEN set, listening on every interface (allowed because of the token)."""
    sim = start_simulator(module_processes)
    serve = start_serve(
        module_processes,
        sim.host,
        tmp_path_factory.mktemp("guarded"),
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        API_HOST="0.0.0.0",
        API_TOKEN=TOKEN,
        PW_CACHE_EXPIRE="0",
    )
    serve.wait_for(lambda: serve.get("/snapshot").status_code == 200, what="first reading")
    return serve


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/snapshot/live"), ("GET", "/snapshot/live?push_to_influx=false"), ("POST", "/poll")],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", f"bearer{TOKEN}", TOKEN],
    ids=["none", "wrong", "longer", "basic", "no-space", "bare"],
)
def test_gateway_reads_need_the_token(
    guarded: ServeProcess, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = httpx.request(method, guarded.base_url + path, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in answer.text


def test_the_right_token_reads_the_gateway_and_read_only_pages_need_none(guarded: ServeProcess) -> None:
    assert guarded.get("/snapshot/live").status_code == 200
    assert guarded.post("/poll", json={"push_to_influx": False}).status_code == 200
    for path in READ_ONLY_PAGES:
        assert guarded.get(path, auth=False).status_code == 200, path
    assert guarded.get("/config", auth=False).json()["API_TOKEN"] == "***"
    assert guarded.get("/config", auth=False).json()["API_HOST"] == "0.0.0.0"


def test_a_second_serve_on_the_same_store_refuses_with_one_clear_line(
    guarded: ServeProcess, process_factory: Callable[..., ManagedProcess]
) -> None:
    second = process_factory(
        "serve-second",
        SERVE,
        env=serve_env(
            "127.0.0.1:9", guarded.data_dir, free_port(), PW_CUSTOMER_PASSWORD="x", PW_LOG_LEVEL="WARNING"
        ),
        cwd=guarded.data_dir,
    )
    assert exit_of(second) == 1
    errors = [line for line in second.log().splitlines() if " ERROR " in line]
    assert errors, second.log()
    assert "in use by another process" in errors[0]
    assert "STORE_PATH" in errors[0]
    assert "Traceback" not in second.log()
    assert guarded.get("/health/live").status_code == 200


def test_no_secret_in_any_log_line_response_or_error_at_debug(
    serve_factory: Callable[..., ServeProcess],
    simulator: Callable[..., Simulator],
    victoria_metrics: VictoriaMetricsServer,
) -> None:
    sim = simulator(flavour="pw2", gateway_password="Gw+Pass/8812", customer_password="Cu-P@ss 551")
    secrets = {
        "API_TOKEN": "api-Tq7#w+9&zz",
        "INFLUX_TOKEN": "influx-Kd2/8=vv",
        "INFLUX_PASSWORD": "influxpw-Hn4%rr",
        "MQTT_PASSWORD": "mqttpw-Yb6 qq",
        "PW_WIFI_PASSWORD": "wifipw-Lm3?pp",
    }
    serve = serve_factory(
        f"127.0.0.1:{sim.port}",
        PW_LOG_LEVEL="DEBUG",
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        PW_GATEWAY_PASSWORD=sim.gateway_password,
        INFLUX_URL=victoria_metrics.url,
        INFLUX_BUCKET="secrets",
        INFLUX_ORG="home",
        PW_CACHE_EXPIRE="0",
        **secrets,
    )
    every_secret = [*secrets.values(), sim.customer_password, sim.gateway_password]
    serve.wait_for(lambda: serve.get("/snapshot").status_code == 200, what="first reading")
    answers = [serve.get(path) for path in READ_ONLY_PAGES]
    answers += [
        serve.get("/snapshot/live"),
        serve.post("/poll", json={"push_to_influx": True}),
        serve.post("/poll", json={secret: True for secret in every_secret}),
        serve.post("/poll", content=secrets["API_TOKEN"], headers={"Content-Type": "application/json"}),
        serve.get(
            "/snapshot/live", auth=False, headers={"Authorization": f"Bearer {secrets['INFLUX_TOKEN']}"}
        ),
        serve.get(f"/history?metric={quote(secrets['API_TOKEN'])}&since=2020-01-01T00:00:00Z"),
        serve.get(f"/history?metric=site_power_w&since={quote(sim.customer_password)}"),
        serve.get(f"/{quote(sim.gateway_password)}"),
    ]
    assert [a.status_code for a in answers[8:]] == [200, 200, 422, 422, 401, 422, 422, 404]
    serve.wait_for(lambda: victoria_metrics.export(r"powerwall_.*") != [], what="a point in VictoriaMetrics")
    stopping = time.monotonic()
    assert serve.process.stop() == 0
    assert time.monotonic() - stopping < STOP_WITHIN_S
    log = serve.log()
    assert " DEBUG " in log
    for secret in every_secret:
        for answer in answers:
            assert secret not in answer.text, (answer.request.url, secret)
            assert quote(secret) not in answer.text
        assert secret not in log, secret
        assert quote(secret) not in log
        assert quote_plus(secret) not in log
