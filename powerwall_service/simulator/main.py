"""`powerwall-influx simulate`: run the simulated gateway until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys

from powerwall_service.simulator.server import GatewayServer
from powerwall_service.simulator.simulation import ChangeError, Simulation, parse_firmware
from powerwall_service.simulator.tls import server_context


def run_simulator(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"simulate: {problem}", file=sys.stderr)
        return 2
    try:
        context = server_context(args.host, args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        print(f"simulate: cannot use --cert/--key: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, context))
    except OSError as exc:
        print(f"simulate: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, as one line, or None."""
    if not 0 < args.port < 65536:
        return f"--port must be between 1 and 65535, not {args.port}"
    if not 0 <= args.control_port < 65536:
        return f"--control-port must be between 0 and 65535, not {args.control_port}"
    if args.control_port and args.control_port == args.port:
        return "--control-port must differ from --port"
    if not 1 <= args.powerwalls <= 12:
        return f"--powerwalls must be between 1 and 12, not {args.powerwalls}"
    if not args.speed >= 0:
        return f"--speed must not be negative, not {args.speed}"
    if (args.cert is None) != (args.key is None):
        return "--cert and --key go together"
    if not args.gateway_password:
        return "--gateway-password must not be empty"
    if args.customer_password == "":
        return "--customer-password must not be empty"
    try:
        parse_firmware(args.firmware)
    except ChangeError as exc:
        return f"--{exc}"
    return None


async def _serve(args: argparse.Namespace, context: ssl.SSLContext) -> int:
    sim = Simulation.create(
        flavour=args.flavour,
        powerwalls=args.powerwalls,
        seed=args.seed,
        site_name=args.site_name,
        firmware=parse_firmware(args.firmware),
        speed=args.speed,
        customer_password=args.customer_password or args.gateway_password[-5:],
        gateway_password=args.gateway_password,
    )
    gateway = GatewayServer(sim, args.host, args.port, args.control_port, context, args.control_token or "")
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    control = f"https://{args.host}:{args.control_port}/_sim/" if args.control_port else "same port /_sim/"
    print(
        f"simulated Powerwall gateway ({args.flavour}, firmware {sim.firmware}) listening on "
        f"https://{args.host}:{args.port} [control: {control}]",
        flush=True,
    )
    await stop.wait()
    await gateway.stop()
    return 0
