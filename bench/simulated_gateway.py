"""The simulated gateway for benchmarks: a pw2 on firmware 23.28.2, frozen, so every call is served.

Benchmarks measure against the same simulator the tests use, started as a real process on free
loopback ports with a separate control port for freezing it and counting its requests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

GATEWAY_PASSWORD = "SIMGATEWAY"
CUSTOMER_PASSWORD = GATEWAY_PASSWORD[-5:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment without the CA-bundle variables that break pypowerwall's TEDAPI."""
    return {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


@dataclass(frozen=True)
class Gateway:
    host: str
    control_url: str

    def total_requests(self) -> int:
        """Requests the gateway port has answered since start, as the simulator counts them."""
        counts: dict[str, int] = httpx.get(f"{self.control_url}/_sim/requests", verify=False).json()  # noqa: S501
        return sum(counts.values())


@contextmanager
def simulated_gateway() -> Iterator[Gateway]:
    port, control_port = free_port(), free_port()
    argv = [sys.executable, "-m", "powerwall_service.cli", "simulate", "--port", str(port)]
    argv += ["--control-port", str(control_port), "--flavour", "pw2", "--firmware", "23.28.2"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=clean_env())
    gateway = Gateway(f"127.0.0.1:{port}", f"https://127.0.0.1:{control_port}")
    try:
        _freeze(gateway)
        yield gateway
    finally:
        process.terminate()
        process.wait(timeout=20)


def _freeze(gateway: Gateway, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.put(f"{gateway.control_url}/_sim/state", json={"frozen": True}, verify=False)  # noqa: S501
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
