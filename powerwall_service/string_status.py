"""`powerwall-influx strings` (also `python -m powerwall_service.string_status`): the PV strings now.

Reads the gateway once and prints one line per string, so an installer or owner can see at a
glance which string is producing and which is not, without opening Grafana. Exit codes as for
`poll`: 0 read, 1 the gateway could not be read, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from powerwall_service.config import ConfigError, Settings, load_settings
from powerwall_service.gateway.errors import PowerwallError
from powerwall_service.poll_command import prepare_one_shot, read_once
from powerwall_service.snapshot import PVString, Snapshot

COLUMNS = ("string", "state", "connected", "voltage V", "current A", "power W")


def run_strings(settings: Settings) -> int:
    problem = prepare_one_shot(settings)
    if problem is not None:
        return problem
    try:
        snapshot, _ = asyncio.run(read_once(settings))
    except PowerwallError as exc:
        print(f"cannot read the gateway: {exc}", file=sys.stderr)
        return 1
    print(format_strings(snapshot))
    return 0


def format_strings(snapshot: Snapshot) -> str:
    """A plain-text table; an unknown value shows as `-`, never as 0."""
    if not snapshot.strings:
        return "the gateway reports no PV strings in this mode (see the README's table of what it serves)"
    rows = [COLUMNS] + [_row(name, pv) for name, pv in sorted(snapshot.strings.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _row(name: str, pv: PVString) -> tuple[str, ...]:
    connected = "-" if pv.connected is None else ("yes" if pv.connected else "no")
    return (
        name,
        pv.state or "-",
        connected,
        _number(pv.voltage_v),
        _number(pv.current_a),
        _number(pv.power_w),
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m powerwall_service.string_status", description=__doc__)
    parser.add_argument(
        "--env-file", help="the .env file to read (default: $POWERWALL_ENV_FILE, else ./.env)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return run_strings(settings)


if __name__ == "__main__":
    sys.exit(main())
