"""Benchmark of one poll against the simulated gateway: requests sent and time taken.

    .venv/bin/python -m bench.bench_poll [--polls N]

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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pypowerwall

from bench.simulated_gateway import CUSTOMER_PASSWORD, Gateway, simulated_gateway
from powerwall_service.config import parse_settings
from powerwall_service.gateway.client import GatewayClient


def measure(polls: int, gateway: Gateway, poll: Callable[[], object]) -> tuple[float, float]:
    """Requests per poll and seconds per poll, after one warm-up poll (login, identity)."""
    poll()
    before = gateway.total_requests()
    started = time.perf_counter()
    for _ in range(polls):
        poll()
    elapsed = time.perf_counter() - started
    return (gateway.total_requests() - before) / polls, elapsed / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=50)
    polls = parser.parse_args().polls
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    with simulated_gateway() as gateway, tempfile.TemporaryDirectory() as data:
        spec = pypowerwall.Powerwall(
            gateway.host,
            password=CUSTOMER_PASSWORD,
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
                "PW_HOST": gateway.host,
                "PW_CUSTOMER_PASSWORD": CUSTOMER_PASSWORD,
                "DATA_DIR": data,
                "PW_POLL_INTERVAL": "5",
                "PW_CACHE_EXPIRE": "0",
            }
        )
        loop = asyncio.new_event_loop()
        client = GatewayClient(settings)
        try:
            base_requests, base_time = measure(polls, gateway, spec_poll)
            ours_requests, ours_time = measure(polls, gateway, lambda: loop.run_until_complete(client.read()))
        finally:
            loop.run_until_complete(client.close())
            loop.close()
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
