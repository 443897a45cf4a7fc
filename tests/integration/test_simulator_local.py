"""The simulated gateway's local REST API against the real pypowerwall, and its control API.

The README's table "What the simulated gateway serves" is the contract: for each local-mode row
the real pypowerwall must return exactly the truth of GET /_sim/state for every method marked
served, and nothing for every method marked not served.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pypowerwall
import pytest
from pypowerwall.local.exceptions import LoginError

from powerwall_service.simulator.tls import self_signed
from tests.fixtures.processes import PYTHON, REPO_ROOT, ManagedProcess, free_port
from tests.fixtures.simulator import ControlError, Simulator, start_simulator

METHODS = (
    "power",
    "level",
    "grid_status",
    "site_name",
    "din",
    "version",
    "status",
    "system_status",
    "battery_blocks",
    "get_reserve",
    "get_mode",
    "vitals",
    "strings",
    "temps",
    "alerts",
)
GRID_MAP = {"SystemGridConnected": "UP", "SystemIslandedActive": "DOWN"}
FIRMWARES = {"< 23.44": "23.28.2", ">= 23.44": "25.10.1"}
NOON = "2026-06-21T12:30:00-07:00"
DEVICE_ALERT = "PVS_a018_MciStringB"

Checker = Callable[[Any, dict[str, Any]], None]


def served_table() -> dict[tuple[str, str, str], dict[str, str]]:
    """(flavour, mode, firmware) -> method -> cell, from the README's table."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("<!-- served-table -->")[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        row = dict(zip(header, cells, strict=True))
        table[(row["flavour"], row["mode"], row["firmware"])] = {m: row[m] for m in METHODS}
    return table


def _vitals_of(pw: Any) -> dict[str, Any]:
    result: dict[str, Any] = pw.vitals() or {}
    return result


def expected_strings(truth: dict[str, Any], with_state: bool) -> dict[str, dict[str, Any]]:
    out = {}
    for name, s in truth["strings"].items():
        entry = {
            "Current": s["current_a"],
            "Voltage": s["voltage_v"],
            "Power": s["power_w"],
            "Connected": s["connected"],
        }
        if with_state:
            entry["State"] = s["state"]
        out[name] = entry
    return out


def check_yes(method: str, pw: Any, truth: dict[str, Any]) -> None:
    powerwalls = truth["powerwalls"]
    match method:
        case "power":
            assert pw.power() == {
                "site": truth["site_power_w"],
                "solar": truth["solar_power_w"],
                "battery": truth["battery_power_w"],
                "load": truth["load_power_w"],
            }
        case "level":
            assert pw.level() == truth["battery_percentage"]
        case "grid_status":
            assert pw.grid_status() == GRID_MAP[truth["grid_status"]]
        case "site_name":
            assert pw.site_name() == truth["site_name"]
        case "din":
            assert pw.din() == truth["din"]
        case "version":
            assert pw.version() == truth["firmware"]
        case "status":
            status = pw.status()
            assert (status["din"], status["version"]) == (truth["din"], truth["firmware"])
        case "system_status":
            status = pw.system_status()
            assert status["nominal_energy_remaining"] == truth["nominal_energy_remaining_wh"]
            assert status["nominal_full_pack_energy"] == truth["nominal_full_pack_energy_wh"]
            assert status["system_island_state"] == truth["grid_status"]
            assert status["available_blocks"] == len(powerwalls)
        case "battery_blocks":
            assert _blocks(pw, with_temperatures=True) == _expected_blocks(truth, with_temperatures=True)
        case "get_reserve":
            raw = truth["backup_reserve_percent"]
            assert pw.get_reserve(scale=False) == raw
            assert pw.get_reserve() == max(0.0, raw / 0.95 - 5 / 0.95)
        case "get_mode":
            assert pw.get_mode() == truth["real_mode"]
        case "vitals":
            vitals = _vitals_of(pw)
            for serial, unit in powerwalls.items():
                pod = vitals[f"TEPOD--{unit['part_number']}--{serial}"]
                assert pod["POD_nom_energy_remaining"] == unit["nominal_energy_remaining_wh"]
                assert pod["POD_nom_full_pack_energy"] == unit["nominal_full_pack_energy_wh"]
                assert (
                    vitals[f"TEPINV--{unit['part_number']}--{serial}"]["PINV_Pout"] == unit["power_w"] / 1000
                )
        case "strings":
            assert pw.strings() == expected_strings(truth, with_state=True)
        case "temps":
            assert pw.temps() == {
                f"TETHC--{unit['part_number']}--{serial}": unit["temperature_c"]
                for serial, unit in powerwalls.items()
            }
        case "alerts":
            assert sorted(pw.alerts()) == sorted(truth["alerts"])
        case _:
            raise AssertionError(f"no check for {method}")


def _blocks(pw: Any, with_temperatures: bool) -> dict[str, dict[str, Any]]:
    keys = ["PackagePartNumber", "nominal_energy_remaining", "nominal_full_pack_energy", "p_out"]
    if with_temperatures:
        keys += ["temperature", "THC_State"]
    return {serial: {k: block.get(k) for k in keys} for serial, block in (pw.battery_blocks() or {}).items()}


def _expected_blocks(truth: dict[str, Any], with_temperatures: bool) -> dict[str, dict[str, Any]]:
    out = {}
    for serial, unit in truth["powerwalls"].items():
        block = {
            "PackagePartNumber": unit["part_number"],
            "nominal_energy_remaining": unit["nominal_energy_remaining_wh"],
            "nominal_full_pack_energy": unit["nominal_full_pack_energy_wh"],
            "p_out": unit["power_w"],
        }
        if with_temperatures:
            block |= {"temperature": unit["temperature_c"], "THC_State": unit["state"]}
        out[serial] = block
    return out


def check_cell(method: str, cell: str, pw: Any, truth: dict[str, Any]) -> None:
    if cell == "yes":
        check_yes(method, pw, truth)
    elif cell == "no":
        assert not getattr(pw, method)(), f"{method} should give nothing"
    elif cell == "no State" and method == "strings":
        assert pw.strings() == expected_strings(truth, with_state=False)
    elif cell == "no temps" and method == "battery_blocks":
        assert _blocks(pw, with_temperatures=True) == {
            serial: block | {"temperature": None, "THC_State": None}
            for serial, block in _expected_blocks(truth, with_temperatures=False).items()
        }
    elif cell == "grid only" and method == "alerts":
        assert sorted(pw.alerts()) == sorted(a for a in truth["alerts"] if a.startswith("System"))
    else:
        raise AssertionError(f"README table: unknown cell {cell!r} for {method}")


def local_client(sim: Simulator, tmp_path: Path, password: str | None = None) -> Any:
    return pypowerwall.Powerwall(
        host=sim.host,
        password=sim.customer_password if password is None else password,
        timezone="America/Los_Angeles",
        cachefile=str(tmp_path / f"cache-{sim.port}"),
        failover=False,
        timeout=5,
    )


@pytest.fixture(scope="module")
def shared_pw2(module_processes: Callable[..., ManagedProcess]) -> Simulator:
    """One pw2 gateway before firmware 23.44 (every local endpoint, vitals too) for this module."""
    return start_simulator(module_processes, flavour="pw2", firmware="23.28.2", powerwalls=2)


@pytest.fixture
def pw2(shared_pw2: Simulator) -> Iterator[Simulator]:
    """The shared pw2 gateway, up, answering, frozen, with no pins; put back so after the test."""
    shared_pw2.put_state(frozen=True, down=False, hang=False)
    shared_pw2.delete_state()
    yield shared_pw2
    shared_pw2.put_state(
        frozen=True,
        down=False,
        hang=False,
        firmware="23.28.2",
        customer_password=shared_pw2.customer_password,
        gateway_password=shared_pw2.gateway_password,
    )


def test_the_readme_table_covers_every_local_combination() -> None:
    table = served_table()
    for flavour in ("pw2", "pw3"):
        for firmware in FIRMWARES:
            assert (flavour, "local", firmware) in table


@pytest.mark.parametrize("flavour", ["pw2", "pw3"])
@pytest.mark.parametrize("firmware", list(FIRMWARES))
def test_pypowerwall_local_mode_reads_what_the_table_says(
    simulator: Callable[..., Simulator], tmp_path: Path, flavour: str, firmware: str
) -> None:
    cells = served_table()[(flavour, "local", firmware)]
    sim = simulator(flavour=flavour, firmware=FIRMWARES[firmware], powerwalls=2)
    truth = sim.put_state(time=NOON, alerts=["SystemConnectedToGrid", DEVICE_ALERT])
    assert truth["solar_power_w"] > 0
    pw = local_client(sim, tmp_path)
    failures = []
    for method in METHODS:
        try:
            check_cell(method, cells[method], pw, truth)
        except AssertionError as exc:
            failures.append(f"{method} ({cells[method]}): {exc}")
    assert not failures, "\n".join(failures)
    assert sim.state() == truth, "a frozen simulator must not move"


def test_an_outage_shows_in_every_local_reading(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    truth = sim.put_state(grid_status="SystemIslandedActive", time=NOON)
    assert truth["site_power_w"] == 0.0
    assert truth["site_voltage_v"] == 0.0
    assert "SystemIslandedActive" in truth["alerts"]
    pw = local_client(sim, tmp_path)
    assert pw.grid_status() == "DOWN"
    assert pw.power()["site"] == 0.0
    assert "SystemIslandedActive" in pw.alerts()
    assert pw.system_status()["system_island_state"] == "SystemIslandedActive"
    restored = sim.delete_state()
    assert restored["grid_status"] == "SystemGridConnected"
    assert restored["alerts"] == ["SystemConnectedToGrid"]


def test_a_changed_charge_keeps_every_endpoint_consistent(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    truth = sim.put_state(battery_percentage=42.5)
    assert truth["battery_percentage"] == pytest.approx(42.5)
    assert truth["nominal_energy_remaining_wh"] == pytest.approx(0.425 * truth["nominal_full_pack_energy_wh"])
    pw = local_client(sim, tmp_path)
    assert pw.level() == truth["battery_percentage"]
    status = pw.system_status()
    assert status["nominal_energy_remaining"] / status["nominal_full_pack_energy"] * 100 == pytest.approx(
        42.5
    )
    assert sum(b["nominal_energy_remaining"] for b in status["battery_blocks"]) == pytest.approx(
        status["nominal_energy_remaining"]
    )


def test_pinned_flows_balance_and_reach_pypowerwall(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    truth = sim.put_state(solar_power_w=4000.0, site_power_w=-1500.0)
    assert truth["solar_power_w"] == 4000.0
    assert truth["load_power_w"] == pytest.approx(truth["site_power_w"] + truth["battery_power_w"] + 4000.0)
    assert sum(s["power_w"] for s in truth["strings"].values()) == pytest.approx(4000.0)
    pw = local_client(sim, tmp_path)
    assert pw.power()["site"] == -1500.0
    after = sim.delete_state()
    assert after["site_power_w"] != -1500.0


def test_a_wrong_password_gets_the_gateways_401(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    before = sim.requests()
    with httpx.Client(base_url=sim.base_url, verify=False) as client:  # noqa: S501
        form = client.post(
            "/api/login/Basic", data={"username": "customer", "password": "wrong", "email": "a@b"}
        )
        as_json = client.post("/api/login/Basic", json={"username": "customer", "password": "wrong"})
        no_login = client.get("/api/meters/aggregates")
    for response in (form, as_json):
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"code": 401, "error": "bad credentials", "message": "Login Error"}
    assert no_login.status_code == 401
    assert no_login.json() == {"code": 401, "message": "Token Expired"}
    with pytest.raises(LoginError):
        local_client(sim, tmp_path, password="wrong").level()
    counts = sim.requests()
    assert counts["/api/login/Basic"] - before.get("/api/login/Basic", 0) == 3
    assert counts["/api/meters/aggregates"] - before.get("/api/meters/aggregates", 0) == 1


def test_login_gives_cookies_and_a_token_that_both_work(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(flavour="pw3")
    with httpx.Client(base_url=sim.base_url, verify=False) as client:  # noqa: S501
        login = client.post(
            "/api/login/Basic", json={"username": "customer", "password": sim.customer_password}
        )
        assert login.status_code == 200
        assert {"AuthCookie", "UserRecord"} <= set(login.cookies)
        token = login.json()["token"]
        by_cookie = client.get("/api/system_status/soe")
        client.cookies.clear()
        by_bearer = client.get("/api/system_status/soe", headers={"Authorization": f"Bearer {token}"})
        duplicated = client.get(
            "/api/system_status/soe",
            headers={"Cookie": f"AuthCookie={token}; UserRecord=x; AuthCookie={token}; UserRecord=x"},
        )
        pw3_missing = client.get("/api/status", headers={"Authorization": f"Bearer {token}"})
        portal = client.get("/")
        unknown = client.get("/api/no/such/thing")
    truth = sim.state()
    for response in (by_cookie, by_bearer, duplicated):
        assert response.status_code == 200
        assert response.json() == {"percentage": truth["battery_percentage"]}
    assert pw3_missing.status_code == 404
    assert portal.status_code == 404
    assert unknown.status_code == 404
    assert unknown.json() == {"code": 404, "error": "Not Found", "message": "Not Found"}


def test_a_password_reset_ends_the_sessions(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    pw = local_client(sim, tmp_path)
    assert pw.level() is not None
    sim.put_state(customer_password="NEWPW")
    truth = sim.state()
    assert "customer_password" not in truth
    assert "gateway_password" not in truth
    with pytest.raises(LoginError):
        local_client(sim, tmp_path).poll("/api/system_status/soe", force=True)
    assert local_client(sim, tmp_path, password="NEWPW").poll("/api/system_status/soe", force=True) == {
        "percentage": truth["battery_percentage"]
    }


def test_a_firmware_update_removes_the_vitals(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    assert local_client(sim, tmp_path).vitals()
    truth = sim.put_state(firmware="23.44.0")
    assert truth["firmware"].startswith("23.44.0 ")
    pw = local_client(sim, tmp_path / "after")
    assert pw.vitals() is None
    assert pw.version() == truth["firmware"]


BAD_CONTROL_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    (b'{"no_such_key": 1}', 422, "unknown key 'no_such_key'"),
    (b'{"battery_percentage": "high"}', 422, "battery_percentage must be a finite number"),
    (b'{"battery_percentage": 101}', 422, "between 0 and 100"),
    (b'{"grid_status": "Down"}', 422, "grid_status must be one of"),
    (b'{"frozen": 1}', 422, "frozen must be true or false"),
    (b'{"site_current_a": 3}', 422, "site_current_a cannot be set"),
    (b'{"strings": {"Z": {"connected": false}}}', 422, "no string named 'Z'"),
    (b'{"firmware": "new"}', 422, "firmware must look like"),
    (
        b'{"site_power_w": 1, "battery_power_w": 1, "solar_power_w": 1, "load_power_w": 1}',
        422,
        "load_power_w must equal",
    ),
    (b"[1, 2]", 422, "must be a JSON object"),
]


def test_bad_control_requests_get_a_reason_and_change_nothing(pw2: Simulator) -> None:
    sim = pw2
    before = sim.state()
    for body, status, reason in BAD_CONTROL_REQUESTS:
        response = httpx.put(f"{sim.control_url}/_sim/state", content=body, verify=False)  # noqa: S501
        assert (response.status_code, body) == (status, body)
        assert reason in response.json()["error"]
    assert sim.state() == before


def test_the_control_token_is_enforced(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(control_token="s3cret")
    for url in (sim.control_url, sim.base_url):
        without = httpx.get(f"{url}/_sim/state", verify=False)  # noqa: S501
        wrong = httpx.get(f"{url}/_sim/state", headers={"X-Sim-Token": "nope"}, verify=False)  # noqa: S501
        assert without.status_code == 403
        assert wrong.status_code == 403
        assert "X-Sim-Token" in without.json()["error"]
    assert sim.state()["frozen"] is True


def test_unfrozen_time_runs_at_the_given_speed(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(frozen=False, speed=600.0)
    first = sim.state()
    time.sleep(0.5)
    second = sim.state()
    elapsed = (datetime.fromisoformat(second["time"]) - datetime.fromisoformat(first["time"])).total_seconds()
    assert 200 < elapsed < 900
    assert second["load_energy_imported_wh"] > first["load_energy_imported_wh"]


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=1.0)


def test_down_refuses_connections_and_up_reopens_the_same_port(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    pw = local_client(sim, tmp_path)
    assert pw.poll("/api/system_status/soe", force=True) is not None
    assert sim.put_state(down=True)["down"] is True
    with pytest.raises(ConnectionRefusedError):
        _connect(sim.port)
    assert pw.poll("/api/system_status/soe", force=True) is None, "a kept-alive connection must die too"
    sim.put_state(down=False)
    _connect(sim.port).close()
    assert pw.poll("/api/system_status/soe", force=True) == {"percentage": sim.state()["battery_percentage"]}
    sim.put_state(down_for_s=0.5)
    with pytest.raises(ConnectionRefusedError):
        _connect(sim.port)
    deadline = time.monotonic() + 5
    while sim.state()["down"] and time.monotonic() < deadline:
        time.sleep(0.05)
    _connect(sim.port).close()


def test_hang_accepts_and_never_answers(pw2: Simulator, tmp_path: Path) -> None:
    sim = pw2
    before = sim.requests().get("/api/status", 0)
    sim.put_state(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{sim.base_url}/api/status", verify=False, timeout=0.5)  # noqa: S501
    assert sim.requests()["/api/status"] == before + 1
    sim.put_state(hang=False)
    assert local_client(sim, tmp_path).level() == sim.state()["battery_percentage"]


def test_put_state_rejects_changes_in_the_fixture_with_the_reason(
    pw2: Simulator,
) -> None:
    sim = pw2
    with pytest.raises(ControlError, match="unknown key"):
        sim.put_state(nonsense=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_simulator_says_where_it_listens_and_stops_cleanly(
    simulator: Callable[..., Simulator], sig: signal.Signals
) -> None:
    sim = simulator(flavour="pw2", firmware="23.28.2", frozen=False)
    assert (
        f"simulated Powerwall gateway (pw2, firmware 23.28.2) listening on https://127.0.0.1:{sim.port} "
        f"[control: https://127.0.0.1:{sim.control_port}/_sim/]"
    ) in sim.process.log()
    sim.process.signal(sig)
    assert sim.process.proc is not None
    assert sim.process.proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--firmware", "latest"], "firmware must look like 25.10.1"),
        (["--powerwalls", "0"], "--powerwalls must be between 1 and 12"),
        (["--cert", "/nonexistent.pem"], "--cert and --key go together"),
        (["--cert", "/nonexistent.pem", "--key", "/nonexistent.pem"], "cannot use --cert/--key"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "powerwall_service.cli", "simulate", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _verified_handshake(port: int, ca_pem: str) -> None:
    """A TLS handshake that checks the certificate against `ca_pem` and the name 127.0.0.1."""
    context = ssl.create_default_context(cadata=ca_pem)
    with _connect(port) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() is not None


def test_the_made_up_certificate_is_valid_for_127_0_0_1(pw2: Simulator) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", pw2.port))
    _verified_handshake(pw2.port, pem)


def test_a_given_certificate_is_served(simulator: Callable[..., Simulator], tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed("127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    sim = simulator(cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    served = ssl.get_server_certificate(("127.0.0.1", sim.port))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    _verified_handshake(sim.port, cert_pem.decode())
