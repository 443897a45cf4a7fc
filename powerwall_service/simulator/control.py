"""The control API under /_sim/: read the truth, change it, count requests.

Answered from loopback only, or, when --control-token is set, only with that X-Sim-Token.
Bodies are JSON both ways; a malformed body is a 400 and a body the simulator cannot apply a
422, each with a one-line reason in {"error": ...}.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from powerwall_service.simulator.local_api import SIM_KEY, json_response
from powerwall_service.simulator.simulation import ChangeError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Listener(Protocol):
    """What the control API needs from the server: bring the gateway port down or up."""

    async def sync(self, down_for_s: float | None) -> None: ...


COUNTS_KEY: web.AppKey[Counter[str]] = web.AppKey("request_counts", Counter)
LISTENER_KEY: web.AppKey[Listener] = web.AppKey("listener", object)  # type: ignore[arg-type]
TOKEN_KEY = web.AppKey("control_token", str)


def error(status: int, reason: str) -> web.Response:
    return json_response({"error": reason}, status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let /_sim/ through only for loopback callers, or for the holder of the control token."""
    if not request.path.startswith("/_sim/"):
        return await handler(request)
    token = request.app[TOKEN_KEY]
    if token:
        given = request.headers.get("X-Sim-Token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return error(403, "the control API needs the right X-Sim-Token header")
    elif not _loopback(request.remote):
        return error(403, "the control API answers loopback callers only (or set --control-token)")
    return await handler(request)


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def get_state(request: web.Request) -> web.Response:
    return json_response(request.app[SIM_KEY].truth())


async def put_state(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    sim = request.app[SIM_KEY]
    try:
        down_for_s = sim.apply(body)
    except ChangeError as exc:
        return error(422, str(exc))
    await request.app[LISTENER_KEY].sync(down_for_s)
    return json_response(sim.truth())


async def delete_state(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim.clear_overrides()
    return json_response(sim.truth())


async def get_requests(request: web.Request) -> web.Response:
    counts: Counter[str] = request.app[COUNTS_KEY]
    return json_response(dict(counts))


async def _json_body(request: web.Request) -> Any:
    """The parsed JSON body, or a 400 response saying why it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(400, f"the body is not valid JSON: {exc}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/state", get_state)
    app.router.add_put("/_sim/state", put_state)
    app.router.add_delete("/_sim/state", delete_state)
    app.router.add_get("/_sim/requests", get_requests)
