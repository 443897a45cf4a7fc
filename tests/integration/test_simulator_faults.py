"""Fault injection: the bytes each fault puts on the wire, and how the real pypowerwall reacts.

Each fault kind is shown first at the wire, over a raw TLS socket (so a reset is seen as a
TCP RST and a silent gateway as an open connection with nothing on it). Then through pypowerwall
0.22.2 in-process, in local mode (customer password) and in full TEDAPI mode (gateway password),
where the reaction must be the one the reference documents (§2.2, §5.2). pypowerwall runs with a
1 s timeout and no response cache, so every call reaches the simulator and a timeout costs 1 s.

Reactions that are a long block inside the library are asserted at the wire level only: TEDAPI's
urllib3 retries a GET that times out, is reset or answers 5xx five times with 0-16 s back-off
(about 30 s per call), so those GET faults are not driven through pypowerwall here.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pypowerwall
import pytest
from pypowerwall.local.exceptions import LoginError

from tests.fixtures.processes import ManagedProcess
from tests.fixtures.simulator import ControlError, Simulator, start_simulator

TIMEOUT_S = 1
SOE = "/api/system_status/soe"


@dataclass(frozen=True)
class Wire:
    """What came back on one connection: the decrypted bytes and how the exchange ended."""

    data: bytes
    ending: str  # "answered" (a whole response), "closed", "reset" (TCP RST) or "silent"
    first_byte_s: float | None

    @property
    def status_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()

    @property
    def headers(self) -> dict[str, str]:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1]


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def exchange(port: int, request: bytes, wait_s: float = 3.0) -> Wire:
    """Send one HTTP request over TLS and record the raw answer.

    The TLS layer runs on memory buffers over a plain socket, so the socket's own errors (a
    reset) and silences are seen directly instead of being folded into ssl's EOF handling.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(request)
        sock.sendall(outgoing.read())
        started = time.monotonic()
        deadline = started + wait_s
        received, ending, first = b"", "silent", None
        while ending == "silent" and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                ending = "reset"
                break
            if not chunk:
                ending = "closed"
                break
            incoming.write(chunk)
            try:
                while data := tls.read(65536):
                    first = first if first is not None else time.monotonic() - started
                    received += data
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                ending = "closed"
            if _complete(received):
                ending = "answered"
    return Wire(received, ending, first)


def http(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def shared_gateway(module_processes: Callable[..., ManagedProcess]) -> Simulator:
    """One frozen pw2 gateway on firmware 25.10 (local REST and TEDAPI both served) per module."""
    return start_simulator(module_processes, flavour="pw2", firmware="25.10.1")


@pytest.fixture
def gateway(shared_gateway: Simulator) -> Iterator[Simulator]:
    """The shared gateway with no fault rules, and none left behind for the next test."""
    shared_gateway.clear_faults()
    yield shared_gateway
    shared_gateway.clear_faults()


def local_client(sim: Simulator, tmp_path: Path) -> Any:
    return pypowerwall.Powerwall(
        host=f"127.0.0.1:{sim.port}",
        password=sim.customer_password,
        failover=False,
        cachefile=str(tmp_path / "local.auth"),
        timeout=TIMEOUT_S,
        pwcacheexpire=0,
    )


def tedapi_client(sim: Simulator, tmp_path: Path) -> Any:
    pw = pypowerwall.Powerwall(
        host=f"127.0.0.1:{sim.port}",
        password="",
        gw_pwd=sim.gateway_password,
        failover=False,
        cachefile=str(tmp_path / "tedapi.auth"),
        timeout=TIMEOUT_S,
        pwcacheexpire=0,
    )
    assert pw.client is not None, "TEDAPI did not connect"
    return pw


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def hits(sim: Simulator, path: str) -> int:
    return int(sim.requests().get(path, 0))


def gateway_hits(sim: Simulator) -> int:
    """Requests to the gateway itself, leaving out the tester's own /_sim/ calls."""
    return sum(n for path, n in sim.requests().items() if not path.startswith("/_sim/"))


def din_request(sim: Simulator) -> bytes:
    token = base64.b64encode(f"Tesla_Energy_Device:{sim.gateway_password}".encode()).decode()
    return http("GET", "/tedapi/din", {"Authorization": f"Basic {token}"})


# --- the wire -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "rule", "status", "body"),
    [
        (SOE, {"status": 401}, "401 Unauthorized", {"code": 401, "message": "Token Expired"}),
        (
            "/api/login/Basic",
            {"status": 401},
            "401 Unauthorized",
            {"code": 401, "error": "bad credentials", "message": "Login Error"},
        ),
        (SOE, {"status": 403}, "403 Forbidden", {"code": 403, "error": "Forbidden", "message": "Forbidden"}),
        (SOE, {"status": 404}, "404 Not Found", {"code": 404, "error": "Not Found", "message": "Not Found"}),
        (
            SOE,
            {"status": 429, "retry_after": 30},
            "429 Too Many Requests",
            {"code": 429, "error": "Api Limit reached for this endpoint", "message": "API Limit Reached"},
        ),
        (
            "/tedapi/v1",
            {"status": 500},
            "500 Internal Server Error",
            {"code": 500, "error": "Internal Server Error", "message": "Internal Server Error"},
        ),
        (
            "/tedapi/v1",
            {"status": 503},
            "503 Service Unavailable",
            {"code": 503, "error": "Service Unavailable", "message": "Service Unavailable"},
        ),
    ],
)
def test_a_status_fault_sends_the_gateways_error(
    gateway: Simulator, path: str, rule: dict[str, Any], status: str, body: dict[str, Any]
) -> None:
    gateway.add_fault(path=path, **rule)
    wire = exchange(gateway.port, http("POST" if path != SOE else "GET", path))
    assert wire.ending == "answered"
    assert wire.status_line == f"HTTP/1.1 {status}"
    assert wire.headers["content-type"].startswith("application/json")
    assert json.loads(wire.body) == body
    assert wire.headers.get("retry-after") == ("30" if "retry_after" in rule else None)


def test_a_delay_holds_the_answer_back(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", delay_s=1.5)
    wire = exchange(gateway.port, din_request(gateway), wait_s=4)
    assert wire.status_line == "HTTP/1.1 200 OK"
    assert wire.body.decode() == gateway.state()["din"]
    assert wire.first_byte_s is not None
    assert wire.first_byte_s >= 1.5


def test_a_reset_answers_nothing_and_resets_the_connection(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", reset=True)
    wire = exchange(gateway.port, din_request(gateway))
    assert (wire.data, wire.ending) == (b"", "reset")


def test_a_silent_gateway_accepts_and_never_answers(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", silent=True)
    wire = exchange(gateway.port, din_request(gateway), wait_s=1.5)
    assert (wire.data, wire.ending) == (b"", "silent")


def test_a_malformed_body_comes_with_a_200(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", body='{"din": ', content_type="application/json")
    wire = exchange(gateway.port, din_request(gateway))
    assert wire.status_line == "HTTP/1.1 200 OK"
    assert wire.headers["content-type"] == "application/json"
    assert wire.body == b'{"din": '


def test_a_wrong_content_type_keeps_the_body(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", content_type="text/html")
    wire = exchange(gateway.port, din_request(gateway))
    assert wire.status_line == "HTTP/1.1 200 OK"
    assert wire.headers["content-type"] == "text/html"
    assert wire.body.decode() == gateway.state()["din"]


def test_a_spent_fault_lets_requests_through_and_every_request_is_counted(gateway: Simulator) -> None:
    gateway.add_fault(path="/tedapi/din", status=503, count=2)
    before = hits(gateway, "/tedapi/din")
    statuses = [exchange(gateway.port, din_request(gateway)).status_line for _ in range(3)]
    assert statuses == ["HTTP/1.1 503 Service Unavailable"] * 2 + ["HTTP/1.1 200 OK"]
    assert hits(gateway, "/tedapi/din") == before + 3
    listed = gateway.faults()["faults"]
    assert [(f["applied"], f["remaining"]) for f in listed] == [(2, 0)]


def test_bad_rules_are_refused_with_a_reason(gateway: Simulator) -> None:
    with pytest.raises(ControlError, match=r"422: .*status must be one of \[401, 403, 404, 429, 500, 503\]"):
        gateway.add_fault(path="/api/*", status=418)
    with pytest.raises(ControlError, match=r"422: .*reset and silent exclude each other"):
        gateway.add_fault(path="/api/*", reset=True, silent=True)
    assert gateway.faults() == {"faults": []}
    wire = exchange(gateway.port, http("POST", "/_sim/faults", body=b"status=500"))
    assert wire.status_line == "HTTP/1.1 400 Bad Request"
    assert b"body is not JSON" in wire.body


# --- pypowerwall, local mode (reference §2.2) ----------------------------------------------------


def test_local_401_once_is_a_transparent_relogin(gateway: Simulator, tmp_path: Path) -> None:
    pw = local_client(gateway, tmp_path)
    assert pw.level() == gateway.state()["battery_percentage"]
    logins = hits(gateway, "/api/login/Basic")
    gateway.add_fault(path=SOE, status=401, count=1)
    assert pw.level() == gateway.state()["battery_percentage"]
    assert hits(gateway, "/api/login/Basic") == logins + 1


@pytest.mark.parametrize("status", [401, 403])
def test_local_401_or_403_after_relogin_gives_none_and_parks_the_endpoint(
    gateway: Simulator, tmp_path: Path, status: int
) -> None:
    pw = local_client(gateway, tmp_path)
    assert pw.level() is not None
    gateway.add_fault(path=SOE, status=status)
    assert pw.level() is None
    gateway.clear_faults()
    soe_hits = hits(gateway, SOE)
    assert pw.level() is None, "negative-cached for 600 s"
    assert hits(gateway, SOE) == soe_hits
    assert pw.grid_status() == "UP", "other endpoints still work"


def test_local_login_refused_raises_login_error(gateway: Simulator, tmp_path: Path) -> None:
    gateway.add_fault(path="/api/login/Basic", status=401)
    pw = local_client(gateway, tmp_path)
    with pytest.raises(LoginError, match="Invalid Powerwall Login"):
        pw.level()


def test_local_login_rate_limited_raises_login_error_naming_429(gateway: Simulator, tmp_path: Path) -> None:
    gateway.add_fault(path="/api/login/Basic", status=429, retry_after=60)
    pw = local_client(gateway, tmp_path)
    with pytest.raises(LoginError, match="HTTP 429"):
        pw.level()


@pytest.mark.parametrize("status", [404, 503])
def test_local_404_and_503_give_none_and_park_only_that_endpoint(
    gateway: Simulator, tmp_path: Path, status: int
) -> None:
    pw = local_client(gateway, tmp_path)
    gateway.add_fault(path=SOE, status=status)
    assert pw.level() is None
    gateway.clear_faults()
    soe_hits = hits(gateway, SOE)
    assert pw.level() is None
    assert hits(gateway, SOE) == soe_hits
    assert pw.grid_status() == "UP"


def test_local_429_puts_every_call_into_a_five_minute_cooldown(gateway: Simulator, tmp_path: Path) -> None:
    pw = local_client(gateway, tmp_path)
    assert pw.grid_status() == "UP"
    gateway.add_fault(path=SOE, status=429, retry_after=300)
    assert pw.level() is None
    gateway.clear_faults()
    before = gateway_hits(gateway)
    assert pw.level() is None
    assert pw.poll("/api/system_status/grid_status", force=True) is None
    assert gateway_hits(gateway) == before, "no request reaches the gateway during the cooldown"


def test_local_500_gives_none_once_then_the_value(gateway: Simulator, tmp_path: Path) -> None:
    pw = local_client(gateway, tmp_path)
    gateway.add_fault(path=SOE, status=500, count=1)
    assert pw.level() is None
    assert pw.level() == gateway.state()["battery_percentage"]


@pytest.mark.parametrize(
    ("rule", "at_least_s"),
    [({"delay_s": 2.5}, TIMEOUT_S), ({"silent": True}, TIMEOUT_S), ({"reset": True}, 0.0)],
)
def test_local_transport_failures_give_none_within_the_timeout(
    gateway: Simulator, tmp_path: Path, rule: dict[str, Any], at_least_s: float
) -> None:
    pw = local_client(gateway, tmp_path)
    assert pw.level() is not None
    gateway.add_fault(path=SOE, **rule)
    level, took = timed(pw.level)
    assert level is None
    assert at_least_s <= took < TIMEOUT_S + 2.0
    gateway.clear_faults()
    assert pw.level() == gateway.state()["battery_percentage"]


def test_local_malformed_json_gives_none(gateway: Simulator, tmp_path: Path) -> None:
    pw = local_client(gateway, tmp_path)
    gateway.add_fault(path=SOE, body='{"percentage": ', content_type="application/json")
    assert pw.poll(SOE) is None
    assert pw.level() is None


def test_local_wrong_content_type_gives_the_raw_text_and_power_zeros(
    gateway: Simulator, tmp_path: Path
) -> None:
    pw = local_client(gateway, tmp_path)
    gateway.add_fault(path="/api/meters/aggregates", content_type="text/html")
    raw = pw.poll("/api/meters/aggregates")
    assert isinstance(raw, str)
    assert '"site"' in raw
    assert pw.power() == {"site": 0.0, "solar": 0.0, "battery": 0.0, "load": 0.0}


# --- pypowerwall, full TEDAPI mode (reference §3.1, §5.2) ----------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_tedapi_error_status_gives_none_and_the_next_call_recovers(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None, status: int
) -> None:
    pw = tedapi_client(gateway, tmp_path)
    truth = gateway.state()["battery_percentage"]
    assert pw.level() == pytest.approx(truth)
    gateway.add_fault(path="/tedapi/v1", status=status, count=1)
    assert pw.level() is None
    assert pw.level() == pytest.approx(truth)


@pytest.mark.parametrize("rule", [{"status": 429, "retry_after": 300}, {"status": 503}])
def test_tedapi_busy_status_starts_a_five_minute_cooldown(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None, rule: dict[str, Any]
) -> None:
    pw = tedapi_client(gateway, tmp_path)
    assert pw.level() is not None
    gateway.add_fault(path="/tedapi/v1", count=1, **rule)
    assert pw.level() is None
    posts = hits(gateway, "/tedapi/v1")
    assert pw.level() is None
    assert pw.grid_status() is None
    assert hits(gateway, "/tedapi/v1") == posts, "no TEDAPI request during the cooldown"


@pytest.mark.parametrize(
    ("rule", "at_least_s"),
    [({"delay_s": 2.5}, TIMEOUT_S), ({"silent": True}, TIMEOUT_S), ({"reset": True}, 0.0)],
)
def test_tedapi_transport_failures_on_post_give_none_without_retries(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None, rule: dict[str, Any], at_least_s: float
) -> None:
    pw = tedapi_client(gateway, tmp_path)
    truth = gateway.state()["battery_percentage"]
    gateway.add_fault(path="/tedapi/v1", **rule)
    posts = hits(gateway, "/tedapi/v1")
    level, took = timed(pw.level)
    assert level is None
    assert at_least_s <= took < TIMEOUT_S + 2.0
    assert hits(gateway, "/tedapi/v1") == posts + 1, "urllib3 does not retry a POST"
    gateway.clear_faults()
    assert pw.level() == pytest.approx(truth)


def test_tedapi_malformed_protobuf_gives_none(gateway: Simulator, tmp_path: Path, no_ca_bundle: None) -> None:
    pw = tedapi_client(gateway, tmp_path)
    gateway.add_fault(path="/tedapi/v1", body="\x08\x96\x01garbage", content_type="application/octet-stream")
    assert pw.level() is None


def test_tedapi_ignores_the_content_type(gateway: Simulator, tmp_path: Path, no_ca_bundle: None) -> None:
    pw = tedapi_client(gateway, tmp_path)
    gateway.add_fault(path="/tedapi/v1", content_type="text/html")
    assert pw.level() == pytest.approx(gateway.state()["battery_percentage"])


def test_tedapi_forbidden_din_leaves_no_client(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None
) -> None:
    gateway.add_fault(path="/tedapi/din", status=403)
    pw, took = timed(
        lambda: pypowerwall.Powerwall(
            host=f"127.0.0.1:{gateway.port}",
            password="",
            gw_pwd=gateway.gateway_password,
            failover=False,
            cachefile=str(tmp_path / "t.auth"),
            timeout=TIMEOUT_S,
        )
    )
    assert pw.client is None
    assert pw.level() is None
    assert took < 5, "refused at once, not retried for 30 s"


def test_tedapi_connect_waits_out_a_retry_after_on_get(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None
) -> None:
    gateway.add_fault(path="/tedapi/din", status=503, retry_after=1, count=1)
    before = hits(gateway, "/tedapi/din")
    pw, took = timed(lambda: tedapi_client(gateway, tmp_path))
    assert pw.din() == gateway.state()["din"]
    assert took >= 1.0
    assert hits(gateway, "/tedapi/din") >= before + 2, "the GET was retried after the 503"


def test_tedapi_a_404_portal_makes_pypowerwall_think_powerwall_3(
    gateway: Simulator, tmp_path: Path, no_ca_bundle: None
) -> None:
    gateway.add_fault(path="/", status=404)
    pw = tedapi_client(gateway, tmp_path)
    assert pw.client.tedapi.pw3 is True
