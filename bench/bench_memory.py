"""Benchmark of `serve`'s memory over many polls: does it grow while it runs for months?

    .venv/bin/python -m bench.bench_memory [--seconds S] [--interval I] [--warmup N]

Runs the simulated gateway and `serve` (local store only) as real processes, polling every
`--interval` seconds (default 0.05: a month of 5-second polls is about 520,000 polls; this
compresses as many polls as it can into the run). It samples the service's resident memory
(VmRSS) after a warm-up (default 2,000 polls: enough to fill the last-1,000-polls statistics
windows and SQLite's page cache) as the baseline measured in the same run, then at the end, and
prints the growth as a ratio and per 1,000 polls.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.simulated_gateway import CUSTOMER_PASSWORD, clean_env, free_port, simulated_gateway


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def polls(api: str) -> int:
    count: int = httpx.get(f"{api}/status", timeout=5).json()["polls"]
    return count


def wait_until_live(api: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"serve at {api} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=2000, help="polls before the baseline")
    args = parser.parse_args()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    with simulated_gateway() as gateway, tempfile.TemporaryDirectory() as data:
        env = clean_env() | {
            "PW_HOST": gateway.host,
            "PW_CUSTOMER_PASSWORD": CUSTOMER_PASSWORD,
            "DATA_DIR": data,
            "PW_POLL_INTERVAL": str(args.interval),
            "API_PORT": str(api_port),
            "PW_LOG_LEVEL": "WARNING",
            "POWERWALL_ENV_FILE": "",
        }
        serve = subprocess.Popen(
            [sys.executable, "-m", "powerwall_service.cli", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=data,
        )
        try:
            wait_until_live(api)
            while polls(api) < args.warmup:
                time.sleep(0.5)
            base_polls, base_rss = polls(api), rss_kib(serve.pid)
            time.sleep(args.seconds)
            end_polls, end_rss = polls(api), rss_kib(serve.pid)
        finally:
            serve.terminate()
            serve.wait(timeout=20)
    done = end_polls - base_polls
    print(f"serve, pw2 local mode, one poll every {args.interval} s, local store only")
    print(f"after warm-up ({base_polls} polls): {base_rss / 1024:.1f} MiB resident (baseline)")
    print(
        f"after {done} more polls:           {end_rss / 1024:.1f} MiB = {end_rss / base_rss:.3f}x the "
        f"baseline, {(end_rss - base_rss) / max(done, 1) * 1000:.0f} KiB per 1,000 polls"
    )


if __name__ == "__main__":
    main()
