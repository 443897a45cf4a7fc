"""The HTTP API: the spec's endpoints plus local history, Prometheus and a liveness probe.

Reading endpoints answer from what the polling loop already has; only /snapshot/live and POST /poll
reach the gateway, at most once per PW_CACHE_EXPIRE (the gateway locks out clients that hammer it),
and only with the bearer token when API_TOKEN is set. /health and /health/live read cached state
only, so they answer at once while the gateway hangs. No response ever carries a secret: /config
is redacted, and every JSON answer, errors included, passes through the same secret mask as the log.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from powerwall_service import __version__
from powerwall_service.config import redacted_settings
from powerwall_service.health_report import health_report, reading_age_s
from powerwall_service.history import HistoryError, HistoryQuery
from powerwall_service.logging_setup import SecretFilter
from powerwall_service.metrics_export import CONTENT_TYPE, quantile, render_metrics
from powerwall_service.reading import Reading
from powerwall_service.service import PollResult, PowerwallService
from powerwall_service.sinks.store import StoreError

STORE_ANSWER_TIMEOUT_S = 2.0
"""The longest /status and /metrics wait for the store's numbers before answering without them."""

SET_ASIDE_SHOWN = 50
"""/status lists the most recent set-aside points; the store's count covers them all."""

T = TypeVar("T")

_BEARER = HTTPBearer(auto_error=False, description="API_TOKEN, required when it is set")


class PollFlags(BaseModel):
    """What to do with a live reading besides returning it."""

    model_config = ConfigDict(extra="forbid")

    push_to_influx: bool = True
    publish_mqtt: bool | None = None


def reading_json(reading: Reading) -> dict[str, Any]:
    return {
        "timestamp": reading.timestamp.astimezone(UTC).isoformat(),
        "site": reading.site,
        "fields": dict(reading.fields),
        "units": {serial: dict(values) for serial, values in reading.units.items()},
    }


class _ServiceLifespan:
    """Starts the service when the server starts and stops it when the server stops.

    Written at the ASGI level so that a refusal to start (the store is in use by another `serve`)
    reaches uvicorn as one plain line instead of Starlette's traceback.
    """

    def __init__(self, app: ASGIApp, service: PowerwallService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()
        try:
            await self.service.start()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"cannot start: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.service.stop()
        await send({"type": "lifespan.shutdown.complete"})


def _redacting_response(settings_secrets: tuple[str, ...]) -> type[JSONResponse]:
    """A JSON response class that masks every configured secret, whatever text it carries.

    Error texts come from the gateway, InfluxDB and the store; none should hold a secret, and
    this makes sure none ever reaches a client even if one does.
    """
    secrets = SecretFilter(settings_secrets)

    class RedactingJSONResponse(JSONResponse):
        def render(self, content: Any) -> bytes:
            return secrets.redact(super().render(content).decode()).encode()

    return RedactingJSONResponse


def create_app(service: PowerwallService) -> FastAPI:
    settings = service.settings
    json_response = _redacting_response(settings.secrets)
    app = FastAPI(
        title="powerwall-influx",
        version=__version__,
        description="Reads a Tesla Powerwall gateway, keeps every reading, writes them to InfluxDB.",
        default_response_class=json_response,
    )
    app.add_middleware(_ServiceLifespan, service=service)

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if settings.api_token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, settings.api_token.encode()):
            raise HTTPException(
                401,
                "a valid 'Authorization: Bearer <API_TOKEN>' header is required",
                {"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with one readable reason per problem; the offending input is never echoed back."""
        reasons = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()))
            reasons.append(f"{where}: {error.get('msg', 'invalid')}")
        return json_response({"detail": "; ".join(reasons) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_response({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def from_store(call: Callable[[], Awaitable[T]]) -> T | None:
        """A store answer, or None when the store is busy or broken: status pages must not hang."""
        try:
            return await asyncio.wait_for(call(), STORE_ANSWER_TIMEOUT_S)
        except (TimeoutError, StoreError):
            return None

    @app.get("/", summary="Service banner")
    async def banner() -> dict[str, Any]:
        return {
            "service": "powerwall-influx",
            "version": __version__,
            "docs": "/docs",
            "openapi": "/openapi.json",
            "endpoints": sorted({route.path for route in app.routes if isinstance(route, APIRoute)}),
        }

    @app.get(
        "/health",
        summary="Health of every component; 200 only when all enabled ones are ok and data is fresh",
        responses={503: {"description": "Something needs attention; same body, see `reasons`"}},
    )
    async def health() -> JSONResponse:
        report = health_report(service)
        return json_response(report.body, status_code=200 if report.healthy else 503)

    @app.get(
        "/health/live",
        summary="Liveness: 200 while the polling loop runs (for restart decisions)",
        responses={503: {"description": "The polling loop is not running"}},
    )
    async def live() -> JSONResponse:
        running = service.loop_running
        return json_response({"alive": running}, status_code=200 if running else 503)

    @app.get("/config", summary="The effective configuration, secrets shown as ***")
    async def config() -> dict[str, object]:
        return redacted_settings(settings)

    @app.get(
        "/snapshot",
        summary="The latest reading of the polling loop",
        responses={404: {"description": "No reading yet"}},
    )
    async def snapshot() -> dict[str, Any]:
        latest = service.latest
        if latest is None or latest.reading is None:
            raise HTTPException(
                404, f"no reading yet: {service.stats.last_error or 'the first poll has not finished'}"
            )
        return {"age_seconds": reading_age_s(service), "reading": reading_json(latest.reading)}

    async def live_read(flags: PollFlags) -> dict[str, Any]:
        publish = settings.mqtt_enabled if flags.publish_mqtt is None else flags.publish_mqtt
        if publish and not settings.mqtt_enabled:
            raise HTTPException(422, "publish_mqtt is true but MQTT is not enabled (MQTT_ENABLED)")
        wait = service.live_read_wait()
        if wait > 0:
            raise HTTPException(
                429,
                f"the gateway was read live less than PW_CACHE_EXPIRE={settings.pw_cache_expire:g} s ago; "
                f"retry in {wait:.1f} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        service.note_live_read()
        result: PollResult = await service.poll_once(store=flags.push_to_influx, publish=publish)
        if result.reading is None:
            raise HTTPException(502, f"the gateway read failed: {result.error}")
        return {
            "reading": reading_json(result.reading),
            "stored": flags.push_to_influx,
            "influx_queued": flags.push_to_influx and settings.influx_enabled,
            "mqtt_published": publish,
        }

    gateway_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "API_TOKEN is set and the request did not carry it"},
        429: {"description": "A live read happened less than PW_CACHE_EXPIRE ago; see Retry-After"},
        502: {"description": "The gateway read failed"},
    }

    @app.get(
        "/snapshot/live",
        summary="Read the gateway now (rate-limited); keep the reading unless push_to_influx=false",
        dependencies=[Depends(require_token)],
        responses=gateway_responses,
    )
    async def snapshot_live(
        push_to_influx: Annotated[
            bool, Query(description="store the reading and send it to InfluxDB")
        ] = True,
        publish_mqtt: Annotated[
            bool | None, Query(description="publish to MQTT; default: MQTT_ENABLED")
        ] = None,
    ) -> dict[str, Any]:
        return await live_read(PollFlags(push_to_influx=push_to_influx, publish_mqtt=publish_mqtt))

    @app.post(
        "/poll",
        summary="Poll the gateway now (rate-limited), like /snapshot/live with the flags in a JSON body",
        dependencies=[Depends(require_token)],
        responses=gateway_responses,
    )
    async def poll(flags: Annotated[PollFlags | None, Body()] = None) -> dict[str, Any]:
        return await live_read(flags or PollFlags())

    @app.get("/status", summary="Counters of the polling loop and the local store")
    async def status() -> dict[str, Any]:
        stats = service.stats
        outbox = await from_store(service.store.status)
        set_aside = await from_store(service.store.set_aside_points)
        return {
            "background_task_running": service.loop_running,
            "polls": stats.polls,
            "successes": stats.successes,
            "failures": stats.failures,
            "held_back": stats.held_back,
            "consecutive_failures": stats.consecutive_failures,
            "last_error": stats.last_error,
            "last_poll_time": _iso(stats.last_poll_time),
            "last_success_time": _iso(stats.last_success_time),
            "gateway_requests": stats.gateway_requests,
            "last_poll_gateway_requests": stats.last_poll_requests,
            "poll_duration_seconds": _quantiles(stats.durations_s),
            "poll_start_lag_seconds": _quantiles(stats.start_lag_s),
            "store": outbox.as_dict() if outbox is not None else None,
            "influxdb": service.influx.status().as_dict() if service.influx is not None else None,
            "set_aside_points": [
                {
                    "reading_id": point.reading_id,
                    "timestamp": point.timestamp.isoformat(),
                    "reason": point.reason,
                    "point": point.point,
                    "set_aside_at": point.at.isoformat(),
                }
                for point in (set_aside or [])[-SET_ASIDE_SHOWN:]
            ],
        }

    @app.get(
        "/history",
        summary="Stored readings of some metrics over a time range, raw or averaged per step",
        responses={
            422: {"description": "Unknown metric, bad range or too many points"},
            503: {"description": "The local store is not available"},
        },
    )
    async def history(
        metric: Annotated[
            list[str],
            Query(
                min_length=1,
                description="catalogue name (docs/metrics.md); repeat for more",
                examples=[["site_power_w", "battery_percentage"]],
            ),
        ],
        since: Annotated[
            datetime,
            Query(description="ISO 8601 start (UTC if no offset)", examples=["2026-01-01T00:00:00Z"]),
        ],
        until: Annotated[datetime | None, Query(description="ISO 8601 end (default: now)")] = None,
        step: Annotated[
            float | None, Query(gt=0, description="average over buckets of this many seconds")
        ] = None,
    ) -> dict[str, Any]:
        try:
            query = HistoryQuery.build(metric, since, until or datetime.now(UTC), step)
        except HistoryError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            return await service.store.history(query)
        except HistoryError as exc:
            raise HTTPException(422, str(exc)) from None
        except StoreError as exc:
            raise HTTPException(503, f"the local store is not available: {exc}") from None

    @app.get("/metrics", summary="Prometheus text: the latest reading and the service's counters")
    async def metrics() -> Response:
        outbox = await from_store(service.store.status)
        numbers = outbox.as_metrics() if outbox is not None else None
        return Response(render_metrics(service, numbers), media_type=CONTENT_TYPE)

    return app


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _quantiles(samples: Collection[float]) -> dict[str, float] | None:
    if not samples:
        return None
    return {"p50": quantile(samples, 0.5), "p99": quantile(samples, 0.99), "max": max(samples)}
