"""The simulated gateway's HTTPS listeners: the gateway port and an optional control-only port.

The gateway port serves the local REST API, TEDAPI and /_sim/; the control port serves /_sim/
only, so a test can still steer the gateway while its port is down or hung.

Middlewares on the gateway port, outermost first: count every request (faulted, hung and
refused-login ones too), hang when told, then the fault rules of `faults.py`; the handlers come
last. The TEDAPI routes (GET /, /tedapi/din, /tedapi/v1, /tedapi/device/{din}/v1) come from
`tedapi.py`, and /_sim/faults (on both ports) from `faults.py`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from powerwall_service.simulator import control, faults, local_api, tedapi
from powerwall_service.simulator.local_api import SESSIONS_KEY, SIM_KEY, Sessions
from powerwall_service.simulator.simulation import Simulation

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(sim: Simulation, gateway: GatewayServer, *, gateway_port: bool) -> web.Application:
    """The aiohttp application of one port (gateway_port=False: the control port)."""
    middlewares: list[Middleware] = (
        [_count(gateway.counts), _hang(gateway), cast(Middleware, faults.middleware(gateway.faults))]
        if gateway_port
        else []
    )
    app = web.Application(middlewares=[*middlewares, control.guard, _json_errors])
    app[SIM_KEY] = sim
    app[SESSIONS_KEY] = gateway.sessions
    app[control.COUNTS_KEY] = gateway.counts
    app[control.LISTENER_KEY] = gateway
    app[control.TOKEN_KEY] = gateway.control_token
    control.add_routes(app)
    app.add_routes(faults.routes(gateway.faults))
    if gateway_port:
        local_api.add_routes(app)
        app.add_routes(tedapi.routes(lambda: _tedapi_view(sim)))
    return app


def _tedapi_view(sim: Simulation) -> tedapi.Gateway:
    return tedapi.Gateway(sim.config, sim.now(), sim.firmware, sim.secrets.gateway_password, sim.din)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods get a JSON error like the gateway's, never aiohttp's text page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return local_api.json_response(
            {"code": exc.status, "error": exc.reason, "message": exc.reason}, exc.status
        )


def _count(counts: Counter[str]) -> Middleware:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        counts[request.path] += 1
        return await handler(request)

    return count


def _hang(gateway: GatewayServer) -> Middleware:
    @web.middleware
    async def hang(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A hung gateway holds every request until the hang is lifted (clients time out first)."""
        await gateway.answering.wait()
        return await handler(request)

    return hang


class GatewayServer:
    """Owns the listening sockets, so it can refuse connections (down) and come back on the same port."""

    def __init__(
        self,
        sim: Simulation,
        host: str,
        port: int,
        control_port: int,
        context: ssl.SSLContext,
        control_token: str,
    ) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.control_port = control_port
        self.context = context
        self.control_token = control_token
        self.counts: Counter[str] = Counter()
        self.sessions = Sessions()
        self.faults = faults.FaultBook()
        self.answering = asyncio.Event()
        self.answering.set()
        self._runners: list[web.AppRunner] = []
        self._gateway_runner: web.AppRunner | None = None
        self._gateway_server: asyncio.Server | None = None
        self._back_up: asyncio.TimerHandle | None = None
        self._control_server: asyncio.Server | None = None

    async def start(self) -> None:
        self._gateway_runner = await self._runner(build_app(self.sim, self, gateway_port=True))
        await self._listen()
        if self.control_port:
            runner = await self._runner(build_app(self.sim, self, gateway_port=False))
            assert runner.server is not None
            self._control_server = await asyncio.get_running_loop().create_server(
                runner.server, self.host, self.control_port, ssl=self.context, reuse_address=True
            )

    async def _runner(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _listen(self) -> None:
        assert self._gateway_runner is not None
        assert self._gateway_runner.server is not None
        self._gateway_server = await asyncio.get_running_loop().create_server(
            self._gateway_runner.server, self.host, self.port, ssl=self.context, reuse_address=True
        )

    async def sync(self, down_for_s: float | None) -> None:
        """Make the sockets match the simulation's `down` and `hang` after a PUT /_sim/state."""
        if self.sim.hang:
            self.answering.clear()
        else:
            self.answering.set()
        if self._back_up is not None:
            self._back_up.cancel()
            self._back_up = None
        if self.sim.down and self._gateway_server is not None:
            self._gateway_server.close()
            self._gateway_server = None
            self._drop_connections()
        elif not self.sim.down and self._gateway_server is None:
            await self._listen()
        if self.sim.down and down_for_s is not None:
            loop = asyncio.get_running_loop()
            self._back_up = loop.call_later(down_for_s, lambda: loop.create_task(self._come_back()))

    async def _come_back(self) -> None:
        self.sim.down = False
        await self.sync(None)

    def _drop_connections(self) -> None:
        """A gateway that goes down takes its open connections with it."""
        assert self._gateway_runner is not None
        assert self._gateway_runner.server is not None
        handler: RequestHandler
        for handler in self._gateway_runner.server.connections:
            handler.force_close()

    async def stop(self) -> None:
        self.answering.set()
        for server in (self._gateway_server, self._control_server):
            if server is not None:
                server.close()
        for runner in self._runners:
            await runner.cleanup()
