"""Command line: `powerwall-influx <command>` or `python -m powerwall_service.cli <command>`.

Each command's work lives in its own module; this file only parses arguments, loads the
configuration where a command needs it, and turns a configuration error into exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from powerwall_service import __version__


def _add_env_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        help="the .env file to read (default: $POWERWALL_ENV_FILE, else ./.env); the environment wins",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="powerwall-influx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"powerwall-influx {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    poll = commands.add_parser("poll", help="read the gateway once and print the reading as JSON")
    _add_env_file(poll)
    poll.add_argument("--pretty", action="store_true", help="indent the JSON")
    poll.add_argument("--no-push", action="store_true", help="do not write the reading to InfluxDB")
    poll.add_argument("--include-snapshot", action="store_true", help="add the full snapshot to the output")

    serve = commands.add_parser("serve", help="poll continuously and serve the HTTP API")
    _add_env_file(serve)
    serve.add_argument("--host", help="API listen address (default: API_HOST)")
    serve.add_argument("--port", type=int, help="API port (default: API_PORT)")
    serve.add_argument("--reload", action="store_true", help="restart when the code changes (development)")

    strings = commands.add_parser("strings", help="read the gateway once and print the PV strings")
    _add_env_file(strings)

    check = commands.add_parser("check-config", help="print the effective configuration, secrets redacted")
    _add_env_file(check)

    simulate = commands.add_parser("simulate", help="run the simulated Powerwall gateway")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8443)
    simulate.add_argument("--control-port", type=int, default=0, help="extra port serving only /_sim/")
    simulate.add_argument("--flavour", choices=["pw3", "pw2"], default="pw3")
    simulate.add_argument("--customer-password", help="default: the gateway password's last 5 characters")
    simulate.add_argument("--gateway-password", default="SIMGATEWAY")
    simulate.add_argument("--site-name", default="Simulated Home")
    simulate.add_argument("--powerwalls", type=int, default=1)
    simulate.add_argument("--firmware", default="25.10.1")
    simulate.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--control-token", help="require X-Sim-Token on /_sim/ from other hosts")
    simulate.add_argument("--cert", help="TLS certificate (PEM); default: a self-signed one made at start")
    simulate.add_argument("--key", help="TLS private key (PEM) for --cert")

    demo = commands.add_parser(
        "demo", help="run the simulator and the service against it, with the local store only"
    )
    _add_env_file(demo)
    demo.add_argument("--port", type=int, default=8000, help="API port")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from powerwall_service.simulator.main import run_simulator

        return run_simulator(args)
    return _run_configured(args)


def _run_configured(args: argparse.Namespace) -> int:
    from powerwall_service.config import ConfigError, load_settings

    try:
        settings = load_settings(getattr(args, "env_file", None))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        from powerwall_service.config import format_settings

        print(format_settings(settings))
        return 0
    if args.command == "poll":
        from powerwall_service.poll_command import run_poll

        return run_poll(
            settings, pretty=args.pretty, push=not args.no_push, include_snapshot=args.include_snapshot
        )
    if args.command == "strings":
        from powerwall_service.string_status import run_strings

        return run_strings(settings)
    if args.command == "serve":
        from powerwall_service.serve_command import run_serve

        return run_serve(settings, host=args.host, port=args.port, reload=args.reload)
    if args.command == "demo":
        from powerwall_service.demo import run_demo

        return run_demo(settings, api_port=args.port)
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
