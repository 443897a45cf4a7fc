"""What pypowerwall actually sent to the gateway, seen from underneath it.

pypowerwall hides the HTTP status of a failed request (it returns `None`), creates its
`requests` sessions inside its constructor, and in TEDAPI mode talks to the gateway before the
constructor returns. To count the requests of each poll, to know a 429's Retry-After, and to
tell a refused login from a dead gateway, we watch `requests.adapters.HTTPAdapter.send`: every
request of every pypowerwall session goes through it. The watch is wrapped around the class
once, and it does something only in a thread that is inside `recording()` (the gateway worker
threads); requests made by any other thread pass through untouched.

The same place fixes TLS: the gateway's certificate is self-signed and pypowerwall asks for no
verification, but `requests` silently replaces `verify=False` on a session by the bundle named in
REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, and TEDAPI then fails with CERTIFICATE_VERIFY_FAILED after
a minute of retries. Inside `recording()` every request is sent with `verify=False`, as
pypowerwall intends, whatever the environment says; nothing else in the process is affected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request: its method and path, and the status (None: no answer, see `error`)."""

    method: str
    path: str
    status: int | None
    retry_after_s: float | None = None
    content_type: str | None = None
    error: str | None = None


@dataclass
class Recorder:
    """The exchanges of one worker-thread call, in order; `sent` also counts those in flight."""

    exchanges: list[Exchange] = field(default_factory=list)
    sent: int = 0


_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _recorder() -> Recorder | None:
    recorder: Recorder | None = getattr(_local, "recorder", None)
    return recorder


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _watched_send(original: Any) -> Any:
    def send(self: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        recorder = _recorder()
        if recorder is None:
            passed: requests.Response = original(self, request, **kwargs)
            return passed
        kwargs["verify"] = False
        method = request.method or "GET"
        path = urlsplit(request.url or "").path
        recorder.sent += 1
        try:
            response: requests.Response = original(self, request, **kwargs)
        except Exception as exc:
            recorder.exchanges.append(Exchange(method, path, None, error=type(exc).__name__))
            raise
        recorder.exchanges.append(
            Exchange(
                method,
                path,
                response.status_code,
                _retry_after(response.headers.get("Retry-After")),
                response.headers.get("Content-Type"),
            )
        )
        return response

    return send


def install() -> None:
    """Wrap HTTPAdapter.send once per process (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        HTTPAdapter.send = _watched_send(HTTPAdapter.send)  # type: ignore[method-assign]
        _installed = True


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Record (and un-verify) into `recorder` every request this thread makes inside the block."""
    install()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = None
