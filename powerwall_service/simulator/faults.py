"""Fault injection: make the simulated gateway misbehave the ways a real one does (reference §5, §7.1.6).

A tester adds rules through the control API (`POST /_sim/faults`); each request whose path matches
a rule's glob gets that rule's fault instead of (or on top of) the normal answer: an HTTP error
with the body and headers the real gateway sends, a delay, a connection reset, a connection that
never answers, or a 200 with a replaced body or Content-Type. Rules never touch /_sim/ itself, so
the tester keeps control of a gateway that refuses everything else.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

CONTROL_PREFIX = "/_sim/"
STATUSES = (401, 403, 404, 429, 500, 503)
_FIELDS = {"path", "status", "retry_after", "delay_s", "reset", "silent", "body", "content_type", "count"}
_DISCONNECT_POLL_S = 0.1

# Bodies the real gateway sends (reference §2.1, §7.1.2-3); other statuses get a plain JSON error.
_LOGIN_401 = {"code": 401, "error": "bad credentials", "message": "Login Error"}
_TOKEN_401 = {"code": 401, "message": "Token Expired"}
_LIMIT_429 = {"code": 429, "error": "Api Limit reached for this endpoint", "message": "API Limit Reached"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultRuleError(ValueError):
    """A fault rule the simulator cannot apply; the message names the problem."""


@dataclass(frozen=True)
class FaultRule:
    """One way to misbehave for the requests whose path matches `path` (an fnmatch glob)."""

    path: str
    status: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    reset: bool = False
    silent: bool = False
    body: str | None = None
    content_type: str | None = None
    count: int | None = None

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.path)


@dataclass
class _Entry:
    rule: FaultRule
    id: int
    applied: int = 0
    remaining: int | None = field(default=None)


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultRuleError(f"{key} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise FaultRuleError(f"{key} must be true or false, not {value!r}")
    return value


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FaultRuleError(f"{key} must be a string, not {value!r}")
    return value


def parse_rule(data: object) -> FaultRule:
    """A validated rule from the JSON a tester posted; FaultRuleError names what is wrong."""
    if not isinstance(data, dict):
        raise FaultRuleError("a fault rule must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise FaultRuleError(f"unknown fields {unknown}; allowed: {sorted(_FIELDS)}")
    path = data.get("path")
    if not isinstance(path, str) or not path.startswith(("/", "*")):
        raise FaultRuleError(f"path must be a glob starting with '/' or '*', not {path!r}")
    if path.startswith(CONTROL_PREFIX):
        raise FaultRuleError(f"path {path!r} is under {CONTROL_PREFIX}, which faults never touch")
    status = data.get("status")
    if status is not None and (isinstance(status, bool) or status not in STATUSES):
        raise FaultRuleError(f"status must be one of {list(STATUSES)}, not {status!r}")
    count = data.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise FaultRuleError(f"count must be a whole number >= 1 (absent: until cleared), not {count!r}")
    rule = FaultRule(
        path=path,
        status=status,
        retry_after=_number(data, "retry_after"),
        delay_s=_number(data, "delay_s") or 0.0,
        reset=_flag(data, "reset"),
        silent=_flag(data, "silent"),
        body=_text(data, "body"),
        content_type=_text(data, "content_type"),
        count=count,
    )
    if rule.reset and rule.silent:
        raise FaultRuleError("reset and silent exclude each other: one closes, the other never answers")
    if (rule.reset or rule.silent) and (
        rule.status is not None or rule.body is not None or rule.content_type
    ):
        raise FaultRuleError("reset and silent send no answer, so status, body and content_type cannot apply")
    if rule.retry_after is not None and rule.status not in (429, 503):
        raise FaultRuleError("retry_after goes with status 429 or 503")
    if not (
        rule.status or rule.delay_s or rule.reset or rule.silent or rule.body is not None or rule.content_type
    ):
        raise FaultRuleError(
            "the rule does nothing: give status, delay_s, reset, silent, body or content_type"
        )
    return rule


class FaultBook:
    """The active rules, in the order they were added; the first match wins."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._next_id = 1

    def add(self, rule: FaultRule) -> dict[str, Any]:
        entry = _Entry(rule, self._next_id, remaining=rule.count)
        self._next_id += 1
        self._entries.append(entry)
        return self._describe(entry)

    def clear(self) -> int:
        cleared = len(self._entries)
        self._entries.clear()
        return cleared

    def listing(self) -> list[dict[str, Any]]:
        return [self._describe(entry) for entry in self._entries]

    def take(self, path: str) -> FaultRule | None:
        """The rule for a request to `path`, counting it against the rule's `count`."""
        if path.startswith(CONTROL_PREFIX):
            return None
        for entry in self._entries:
            if entry.remaining != 0 and entry.rule.matches(path):
                entry.applied += 1
                if entry.remaining is not None:
                    entry.remaining -= 1
                return entry.rule
        return None

    @staticmethod
    def _describe(entry: _Entry) -> dict[str, Any]:
        return {"id": entry.id, **asdict(entry.rule), "applied": entry.applied, "remaining": entry.remaining}


def error_body(status: int, path: str) -> dict[str, Any]:
    """The JSON the gateway answers `status` with on `path`."""
    if status == 401:
        return _LOGIN_401 if path == "/api/login/Basic" else _TOKEN_401
    if status == 429:
        return _LIMIT_429
    phrase = HTTPStatus(status).phrase
    return {"code": status, "error": phrase, "message": phrase}


def _status_response(rule: FaultRule, status: int, path: str) -> web.Response:
    headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
    if rule.body is None:
        response = web.json_response(error_body(status, path), status=status, headers=headers)
    else:
        response = web.Response(
            text=rule.body, status=status, headers=headers, content_type="application/json"
        )
    if rule.content_type:
        response.headers["Content-Type"] = rule.content_type
    return response


async def _reset(request: web.Request) -> web.Response:
    """Drop the connection with a TCP RST (SO_LINGER 0), as a gateway that crashes mid-request.

    The request is read in full first, so the client always meets the reset while waiting for
    the answer, never half-way through sending (which its HTTP library would treat differently).
    The response returned afterwards is never sent: aiohttp finds the transport closed.
    """
    await request.read()
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=499)


async def _never_answer(request: web.Request) -> web.Response:
    """Hold the request until the client gives up; the response is never sent.

    aiohttp signals a lost connection to a running handler only through the transport, so poll it.
    """
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(_DISCONNECT_POLL_S)
    return web.Response(status=499)


def _override(response: web.StreamResponse, rule: FaultRule) -> web.StreamResponse:
    """The handler's answer with its body and/or Content-Type replaced (a malformed 200)."""
    if not isinstance(response, web.Response):
        return response
    body = rule.body.encode() if rule.body is not None else response.body
    replaced = web.Response(body=body, status=response.status, headers=response.headers)
    if rule.content_type:
        replaced.headers["Content-Type"] = rule.content_type
    return replaced


def middleware(book: FaultBook) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware applying `book`'s rules to every request outside /_sim/."""

    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        rule = book.take(request.path)
        if rule is None:
            return await handler(request)
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.reset:
            return await _reset(request)
        if rule.silent:
            return await _never_answer(request)
        if rule.status is not None:
            return _status_response(rule, rule.status, request.path)
        response = await handler(request)
        if rule.body is not None or rule.content_type:
            return _override(response, rule)
        return response

    return inject_faults


def routes(book: FaultBook) -> list[web.RouteDef]:
    """The control API: POST adds a rule, GET lists them, DELETE clears them all."""

    async def add(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
        try:
            rule = parse_rule(data)
        except FaultRuleError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response(book.add(rule), status=201)

    async def listing(_request: web.Request) -> web.Response:
        return web.json_response({"faults": book.listing()})

    async def clear(_request: web.Request) -> web.Response:
        return web.json_response({"cleared": book.clear()})

    return [
        web.post("/_sim/faults", add),
        web.get("/_sim/faults", listing),
        web.delete("/_sim/faults", clear),
    ]
