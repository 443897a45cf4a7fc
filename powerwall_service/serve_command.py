"""`serve`: the polling loop and the HTTP API in one process, until SIGTERM or Ctrl-C.

uvicorn owns the signals: on SIGTERM or SIGINT it stops accepting requests and runs the app's
lifespan shutdown, which stops the service (the loop is cancelled, the store closed, nothing that
was stored is lost). `--reload` runs the app in a child process that uvicorn restarts when the
code changes; the child rebuilds the same settings from the environment this process exports.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from powerwall_service.api import create_app
from powerwall_service.config import (
    ConfigError,
    Settings,
    check_api_exposure,
    check_gateway_credentials,
    format_value,
    key_specs,
    load_settings,
)
from powerwall_service.logging_setup import configure_logging
from powerwall_service.service import PowerwallService

SHUTDOWN_GRACE_S = 3
"""Seconds open HTTP requests get to finish on SIGTERM before the service stops anyway."""


def run_serve(settings: Settings, host: str | None, port: int | None, reload: bool) -> int:
    """Exit codes: 0 stopped by a signal, 1 could not start (e.g. the store is in use), 2 unsafe config."""
    listen_host = host if host is not None else settings.api_host
    listen_port = port if port is not None else settings.api_port
    try:
        check_gateway_credentials(settings)
        check_api_exposure(settings, listen_host)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if reload:
        _export(settings)
        uvicorn.run(
            f"{__name__}:reload_app",
            factory=True,
            reload=True,
            reload_dirs=[str(Path(__file__).parent)],
            host=listen_host,
            port=listen_port,
            log_config=None,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        return 0
    app = create_app(PowerwallService(settings))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=listen_host,
            port=listen_port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    # After its graceful shutdown uvicorn raises the signal that stopped it again, so that the
    # default action runs; a stop that was asked for and done cleanly exits 0 instead.
    signal.signal(signal.SIGTERM, _ignore)
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    except SystemExit:
        # uvicorn exits this way when the app refused to start; the reason is already logged.
        return 1
    return 0


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The SIGTERM handler uvicorn leaves in place once it has stopped the service."""


def reload_app() -> FastAPI:
    """The app factory uvicorn's reloader calls in its child process."""
    settings = load_settings(None)
    configure_logging(settings)
    return create_app(PowerwallService(settings))


def _export(settings: Settings) -> None:
    """Put the effective settings in the environment, where the reloader's child reads them."""
    for spec in key_specs():
        os.environ[spec.key] = format_value(getattr(settings, spec.attr))
