"""Benchmark of one poll against the simulated gateway: requests sent and time taken.

    .venv/bin/python bench/bench_poll.py [--polls N]

The baseline is the spec's service's call sequence (site_name, version, din, level, power,
grid_status, status, vitals on one pypowerwall instance), measured in the same run against the
same simulator (pw2, firmware 23.28.2, local mode, so vitals exist and every call is served).
Requests are counted by the simulator itself (GET /_sim/requests); figures are printed as
ratios against the baseline, since absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pypowerwall

from powerwall_service.config import parse_settings
from powerwall_service.gateway.client import GatewayClient

PASSWORD = "SIMGATEWAY"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def total_requests(control: str) -> int:
    counts: dict[str, int] = httpx.get(f"{control}/_sim/requests", verify=False).json()  # noqa: S501
    return sum(counts.values())


def measure(polls: int, control: str, poll: Callable[[], object]) -> tuple[float, float]:
    """Requests per poll and seconds per poll, after one warm-up poll (login, identity)."""
    poll()
    before = total_requests(control)
    started = time.perf_counter()
    for _ in range(polls):
        poll()
    elapsed = time.perf_counter() - started
    return (total_requests(control) - before) / polls, elapsed / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=50)
    polls = parser.parse_args().polls
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    port, control_port = free_port(), free_port()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "powerwall_service.cli",
            "simulate",
            "--port",
            str(port),
            "--control-port",
            str(control_port),
            "--flavour",
            "pw2",
            "--firmware",
            "23.28.2",
        ],
        stdout=subprocess.DEVNULL,
    )
    control = f"https://127.0.0.1:{control_port}"
    try:
        for _ in range(100):
            try:
                httpx.put(f"{control}/_sim/state", json={"frozen": True}, verify=False)  # noqa: S501
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as data:
            host = f"127.0.0.1:{port}"
            spec = pypowerwall.Powerwall(
                host,
                password=PASSWORD[-5:],
                timezone="UTC",
                pwcacheexpire=0,
                timeout=5,
                cachefile=str(Path(data) / "spec.cache"),
                failover=False,
            )

            def spec_poll() -> None:
                spec.site_name(), spec.version(), spec.din(), spec.level(), spec.power()
                spec.grid_status("string"), spec.status(), spec.vitals()

            settings = parse_settings(
                {
                    "PW_HOST": host,
                    "PW_CUSTOMER_PASSWORD": PASSWORD[-5:],
                    "DATA_DIR": data,
                    "PW_POLL_INTERVAL": "5",
                    "PW_CACHE_EXPIRE": "0",
                }
            )
            loop = asyncio.new_event_loop()
            client = GatewayClient(settings)
            try:
                base_requests, base_time = measure(polls, control, spec_poll)
                ours_requests, ours_time = measure(
                    polls, control, lambda: loop.run_until_complete(client.read())
                )
            finally:
                loop.run_until_complete(client.close())
                loop.close()
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print(f"{polls} polls each, pw2 firmware 23.28.2, local mode, simulator frozen")
    print(
        f"spec's call sequence: {base_requests:.2f} requests/poll, {base_time * 1000:.1f} ms/poll (baseline)"
    )
    print(
        f"GatewayClient.read:   {ours_requests:.2f} requests/poll, {ours_time * 1000:.1f} ms/poll "
        f"= {ours_requests / base_requests:.2f}x the requests, {ours_time / base_time:.2f}x the time"
    )


if __name__ == "__main__":
    main()
