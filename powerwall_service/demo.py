"""`powerwall-influx demo`: the whole service on its embedded defaults, nothing to install.

It starts the built-in simulated gateway (a Powerwall 3) on a free loopback port and runs
`serve` against it in TEDAPI mode, as a Powerwall 3 owner would, with the local store, so a
user can watch the service work before pointing it at a real Powerwall. The rest of the
configuration (.env and the environment) applies as usual, so a configured InfluxDB receives
the demo's readings too.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

from powerwall_service.config import Settings
from powerwall_service.serve_command import run_serve

GATEWAY_PASSWORD = "SIMGATEWAY"  # noqa: S105 - the simulator's own, not a user's secret
STARTUP_TIMEOUT_S = 30.0


def run_demo(settings: Settings, api_port: int) -> int:
    port = _free_port()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "powerwall_service.cli",
            "simulate",
            "--port",
            str(port),
            "--gateway-password",
            GATEWAY_PASSWORD,
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        if not _wait_for_port(port, simulator):
            print("demo: the simulated gateway did not start", file=sys.stderr)
            return 1
        demo_settings = dataclasses.replace(
            settings,
            pw_host=f"127.0.0.1:{port}",
            pw_customer_password=None,
            pw_gateway_password=GATEWAY_PASSWORD,
            api_port=api_port,
        )
        print(
            f"demo: simulated gateway on https://127.0.0.1:{port}; service API on "
            f"http://{demo_settings.api_host}:{api_port} (try /snapshot, /health, /history, /docs); "
            f"readings kept in {os.path.abspath(demo_settings.store_path)}"
            + (f"; InfluxDB at {demo_settings.influx_url}" if demo_settings.influx_url else ""),
            flush=True,
        )
        return run_serve(demo_settings, host=None, port=None, reload=False)
    finally:
        simulator.terminate()
        try:
            simulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            simulator.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
