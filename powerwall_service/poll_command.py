"""`powerwall-influx poll`: read the gateway once and print the reading as one JSON object.

Exit codes: 0 read (and pushed, when asked), 1 the gateway could not be read, 2 configuration
error, 3 read but the push to InfluxDB failed (the reading is printed anyway). Reasons go to
stderr as one line; stdout holds only the JSON, so the output can be piped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from powerwall_service.catalogue import reading_from_snapshot, site_for
from powerwall_service.config import ConfigError, Settings, check_gateway_credentials
from powerwall_service.gateway.client import GatewayClient
from powerwall_service.gateway.errors import PowerwallError
from powerwall_service.logging_setup import configure_logging
from powerwall_service.reading import Reading
from powerwall_service.snapshot import Snapshot


def run_poll(settings: Settings, *, pretty: bool, push: bool, include_snapshot: bool) -> int:
    problem = prepare_one_shot(settings)
    if problem is not None:
        return problem
    return asyncio.run(_poll(settings, pretty=pretty, push=push, include_snapshot=include_snapshot))


def prepare_one_shot(settings: Settings) -> int | None:
    """Checks and logging for a command that reads the gateway once; an exit code if it cannot."""
    try:
        check_gateway_credentials(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.pw_log_level != "DEBUG":
        # One read, one answer: the command's reason line says what failed; pypowerwall's own
        # account of it (several ERROR lines per failure) is for PW_LOG_LEVEL=DEBUG.
        logging.getLogger().setLevel(logging.CRITICAL)
    return None


async def read_once(settings: Settings) -> tuple[Snapshot, int | None]:
    """One read with a client of its own; the snapshot and the requests it took."""
    client = GatewayClient(settings)
    try:
        return await client.read(), client.last_poll_requests
    finally:
        await client.close()


async def _poll(settings: Settings, *, pretty: bool, push: bool, include_snapshot: bool) -> int:
    try:
        snapshot, requests = await read_once(settings)
    except PowerwallError as exc:
        print(f"cannot read the gateway: {exc}", file=sys.stderr)
        return 1
    reading = reading_from_snapshot(snapshot, site_for(snapshot, settings))
    code = 0
    if push and settings.influx_url:
        code = await _push(settings, reading)
    print(_output(reading, snapshot if include_snapshot else None, requests, pretty))
    return code


async def _push(settings: Settings, reading: Reading) -> int:
    from powerwall_service.sinks.influx import InfluxWriteError, push_once

    try:
        await push_once(settings, reading)
    except InfluxWriteError as exc:
        print(f"read the gateway, but could not write to InfluxDB: {exc}", file=sys.stderr)
        return 3
    return 0


def _output(reading: Reading, snapshot: Snapshot | None, requests: int | None, pretty: bool) -> str:
    document: dict[str, Any] = {
        "timestamp": reading.timestamp.isoformat(),
        "site": reading.site,
        "metrics": dict(reading.fields),
        "requests": requests,
    }
    if reading.units:
        document["powerwalls"] = {serial: dict(values) for serial, values in reading.units.items()}
    if snapshot is not None:
        document["snapshot"] = dataclasses.asdict(snapshot)
    return json.dumps(document, indent=2 if pretty else None, sort_keys=pretty, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
