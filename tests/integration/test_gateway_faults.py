"""Every way the gateway fails, through the real GatewayClient, pypowerwall and simulator process.

One test per fault and mode. Each drives the client in-process against a frozen simulator with a
short deadline and checks what a user would see: the typed error and its advice, a failed poll
that returns within twice the deadline, the counters the health view shows, no made-up zero in
any reading, and data again within two polls of the fault clearing (for a 429: once the
cooldown ends, with no request at all reaching the gateway during it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from powerwall_service.config import Settings
from powerwall_service.gateway.client import AUTH_FAILURE_THRESHOLD, MAX_ABANDONED_THREADS, GatewayClient
from powerwall_service.gateway.errors import (
    PowerwallAuthError,
    PowerwallDataError,
    PowerwallError,
    PowerwallRateLimitedError,
    PowerwallTimeoutError,
    PowerwallUnavailableError,
)
from powerwall_service.health import Component, State
from powerwall_service.snapshot import Snapshot
from tests.fixtures.processes import ManagedProcess, clean_env
from tests.fixtures.simulator import Simulator, gateway_settings, start_simulator

DEADLINE_S = 2.0
INTERVAL_S = 0.5
COOLDOWN_S = 1.5
AGGREGATES = "/api/meters/aggregates"
TEDAPI = "/tedapi/v1"

pytestmark = pytest.mark.usefixtures("no_ca_bundle")


FLAVOUR = {"local": "pw2", "tedapi": "pw3"}
BOTH_MODES = [("local", "local"), ("tedapi", "tedapi")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Simulator]]:
    """One frozen simulator per mode for the whole module: starting one costs seconds."""
    logs = tmp_path_factory.mktemp("simulators")
    processes: list[ManagedProcess] = []

    def start(name: str, argv: list[str], cwd: Path) -> ManagedProcess:
        process = ManagedProcess(name, argv, logs / f"{name}.log", env=clean_env(), cwd=cwd).start()
        processes.append(process)
        return process

    try:
        yield {mode: start_simulator(start, flavour=flavour) for mode, flavour in FLAVOUR.items()}
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def gateway(shared: dict[str, Simulator], request: pytest.FixtureRequest) -> Simulator:
    """The mode's simulator, healthy again, once the calls earlier tests abandoned have ended."""
    ending = time.monotonic() + 15
    while any(t.name.startswith("powerwall-") for t in threading.enumerate()) and time.monotonic() < ending:
        time.sleep(0.1)
    sim = shared[request.param]
    sim.clear_faults()
    sim.put_state(
        down=False,
        hang=False,
        customer_password=sim.customer_password,
        gateway_password=sim.gateway_password,
    )
    return sim


def settings_for(sim: Simulator, mode: str, data_dir: Path) -> Settings:
    return gateway_settings(
        sim,
        mode,
        data_dir,
        pw_request_timeout=DEADLINE_S,
        pw_poll_interval=INTERVAL_S,
        pw_cache_expire=INTERVAL_S / 2,
        pw_rate_limit_cooldown=COOLDOWN_S,
        pw_auth_backoff_max=INTERVAL_S,
    )


@dataclass(frozen=True)
class Fault:
    """How to break the gateway, what the client must say, and how to mend it."""

    name: str
    error: type[PowerwallError]
    rule: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    mend: dict[str, Any] | None = None
    advice: str = ""


def faults(mode: str, data_path: str, password_key: str) -> list[Fault]:
    setting = "PW_CUSTOMER_PASSWORD" if mode == "local" else "PW_GATEWAY_PASSWORD"
    content_type_error: type[PowerwallError] = PowerwallDataError
    return [
        Fault("401", PowerwallAuthError, {"path": data_path, "status": 401}, advice=setting),
        Fault("403", PowerwallAuthError, {"path": data_path, "status": 403}, advice=setting),
        Fault("404", PowerwallUnavailableError, {"path": data_path, "status": 404}, advice="404"),
        Fault("500", PowerwallUnavailableError, {"path": data_path, "status": 500}, advice="500"),
        Fault("503", PowerwallUnavailableError, {"path": data_path, "status": 503}, advice="503"),
        Fault("delay", PowerwallTimeoutError, {"path": data_path, "delay_s": 3 * DEADLINE_S}),
        Fault("reset", PowerwallUnavailableError, {"path": data_path, "reset": True}, advice="PW_HOST"),
        Fault(
            "down", PowerwallUnavailableError, state={"down": True}, mend={"down": False}, advice="PW_HOST"
        ),
        Fault("hang", PowerwallTimeoutError, state={"hang": True}, mend={"hang": False}),
        Fault(
            "malformed",
            PowerwallDataError,
            {"path": data_path, "body": '{"site": {"instant_power": ', "content_type": "application/json"}
            if mode == "local"
            else {"path": data_path, "body": "not a protobuf message"},
        ),
        Fault("content-type", content_type_error, {"path": data_path, "content_type": "text/html"}),
        Fault(
            "password",
            PowerwallAuthError,
            state={password_key: "Changed1"},
            advice=setting,
        ),
    ]


def local_faults() -> list[Fault]:
    return faults("local", AGGREGATES, "customer_password")


def tedapi_faults() -> list[Fault]:
    return [f for f in faults("tedapi", TEDAPI, "gateway_password") if f.name != "content-type"]


async def poll(client: GatewayClient) -> tuple[Snapshot | None, PowerwallError | None, float]:
    started = time.monotonic()
    try:
        snapshot = await client.read()
    except PowerwallError as exc:
        return None, exc, time.monotonic() - started
    return snapshot, None, time.monotonic() - started


def assert_truthful(snapshot: Snapshot, truth: dict[str, Any]) -> None:
    """The reading is the simulator's truth, so no value in it is a made-up zero."""
    for name in ("site_power_w", "solar_power_w", "battery_power_w", "load_power_w", "battery_percentage"):
        assert getattr(snapshot, name) == pytest.approx(truth[name], abs=0.01), name
    for item in fields(snapshot):
        value = getattr(snapshot, item.name)
        if isinstance(value, float) and value == 0:
            assert truth.get(item.name) == 0, f"{item.name} is a made-up 0"


async def recover(client: GatewayClient, truth: dict[str, Any]) -> int:
    """Poll until a reading comes back; return how many polls it took (at most two allowed)."""
    for attempt in (1, 2):
        snapshot, error, _ = await poll(client)
        if snapshot is not None:
            assert_truthful(snapshot, truth)
            return attempt
        await asyncio.sleep(INTERVAL_S)
    raise AssertionError(f"no reading within two polls of the fault clearing: {error}")


async def run_fault(sim: Simulator, mode: str, fault: Fault, tmp_path: Path) -> None:
    truth = sim.state()
    health = Component("powerwall")
    client = GatewayClient(settings_for(sim, mode, tmp_path), health)
    try:
        first, error, _ = await poll(client)
        assert first is not None, error
        assert_truthful(first, truth)
        before = client.last_success

        if fault.rule is not None:
            sim.add_fault(**fault.rule)
        if fault.state is not None:
            sim.put_state(**fault.state)
        snapshot, error, took = await poll(client)
        assert snapshot is None
        assert isinstance(error, fault.error), f"{type(error).__name__}: {error}"
        assert fault.advice in str(error)
        assert took < 2 * DEADLINE_S
        assert client.abandoned_threads <= MAX_ABANDONED_THREADS
        assert client.consecutive_failures == 1
        assert client.last_error == str(error)
        assert client.last_success == before
        view = health.view()
        assert view.state is State.DOWN
        assert view.last_error == str(error)

        sim.clear_faults()
        if fault.mend is not None:
            sim.put_state(**fault.mend)
        if fault.name == "password":
            sim.put_state(**{key: truth_password(sim, key) for key in fault.state or {}})
            await asyncio.sleep(INTERVAL_S)  # PW_AUTH_BACKOFF_MAX: the client waits before a new login
        await asyncio.sleep(INTERVAL_S)
        await recover(client, truth)
        assert client.consecutive_failures == 0
        assert health.view().state is State.OK
        assert client.last_success is not None
        assert before is not None
        assert client.last_success > before
    finally:
        await client.close()


def truth_password(sim: Simulator, key: str) -> str:
    return sim.customer_password if key == "customer_password" else sim.gateway_password


@pytest.mark.parametrize("gateway", ["local"], indirect=True)
@pytest.mark.parametrize("fault", local_faults(), ids=lambda f: f.name)
async def test_local_mode_survives(gateway: Simulator, fault: Fault, tmp_path: Path) -> None:
    await run_fault(gateway, "local", fault, tmp_path)


@pytest.mark.parametrize("gateway", ["tedapi"], indirect=True)
@pytest.mark.parametrize("fault", tedapi_faults(), ids=lambda f: f.name)
async def test_tedapi_mode_survives(gateway: Simulator, fault: Fault, tmp_path: Path) -> None:
    await run_fault(gateway, "tedapi", fault, tmp_path)


@pytest.mark.parametrize("gateway", ["tedapi"], indirect=True)
async def test_tedapi_ignores_a_wrong_content_type(gateway: Simulator, tmp_path: Path) -> None:
    """pypowerwall's TEDAPI never looks at Content-Type: the protobuf body still reads right."""
    sim = gateway
    client = GatewayClient(settings_for(sim, "tedapi", tmp_path))
    try:
        sim.add_fault(path=TEDAPI, content_type="text/html")
        snapshot, error, _ = await poll(client)
        assert snapshot is not None, error
        assert_truthful(snapshot, sim.state())
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("gateway", "mode"), [("local", "local"), ("tedapi", "tedapi")], indirect=["gateway"]
)
async def test_a_429_silences_the_client_until_its_retry_after(
    gateway: Simulator, mode: str, tmp_path: Path
) -> None:
    sim = gateway
    truth = sim.state()
    client = GatewayClient(settings_for(sim, mode, tmp_path))
    retry_after = 2.0
    try:
        first, error, _ = await poll(client)
        assert first is not None, error
        sim.add_fault(path=AGGREGATES if mode == "local" else TEDAPI, status=429, retry_after=retry_after)
        limited_at = time.monotonic()
        _, error, took = await poll(client)
        assert isinstance(error, PowerwallRateLimitedError), error
        assert took < 2 * DEADLINE_S
        limited = error
        resume_in = (limited.retry_at - datetime.now(UTC)).total_seconds()
        assert retry_after - 0.5 < resume_in <= retry_after, "Retry-After is what the gateway said"
        sim.clear_faults()
        sent = sum(sim.requests().values())
        while time.monotonic() - limited_at < resume_in - INTERVAL_S:
            _, error, _ = await poll(client)
            assert isinstance(error, PowerwallRateLimitedError)
            assert client.last_poll_requests == 0
            await asyncio.sleep(INTERVAL_S / 2)
        assert sum(sim.requests().values()) == sent, "a request reached the gateway during the cooldown"
        await asyncio.sleep(max(0.0, (limited.retry_at - datetime.now(UTC)).total_seconds()))
        assert await recover(client, truth) == 1
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("gateway", "mode"), [("local", "local"), ("tedapi", "tedapi")], indirect=["gateway"]
)
async def test_three_auth_failures_force_exactly_one_full_reconnect(
    gateway: Simulator, mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = gateway
    truth = sim.state()
    client = GatewayClient(settings_for(sim, mode, tmp_path))
    caplog.set_level(logging.INFO, logger="powerwall_service.gateway.client")
    try:
        first, error, _ = await poll(client)
        assert first is not None, error
        sim.add_fault(path=AGGREGATES if mode == "local" else TEDAPI, status=401)
        for failure in range(1, AUTH_FAILURE_THRESHOLD + 1):
            _, error, _ = await poll(client)
            assert isinstance(error, PowerwallAuthError)
            assert f"Authentication error fetching power metrics (failure {failure}/3)" in caplog.text
            assert client.full_reconnects == 0
        assert "Attempting reconnection to recover from auth error" in caplog.text
        _, error, _ = await poll(client)
        assert isinstance(error, PowerwallAuthError)
        assert "Forcing full reconnection to Powerwall (auth failures: 3)" in caplog.text
        assert client.full_reconnects == 1
        sim.clear_faults()
        await recover(client, truth)
        assert client.full_reconnects == 1
        assert "Successfully recovered from previous auth failures" in caplog.text
    finally:
        await client.close()
