"""The verdict of /health: healthy only when every enabled part works AND the data is fresh.

Every peer answers 200 while broken (Powerwall-Dashboard#821), so the verdict here also needs a
recent reading: a gateway that stopped answering without raising an error (a hang) makes the
reading stale, and stale is unhealthy. The report reads only cached state, never the gateway or
the store, so it answers at once whatever hangs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from powerwall_service.health import State

if TYPE_CHECKING:
    from powerwall_service.service import PowerwallService

FRESH_POLL_INTERVALS = 3
"""A reading older than this many poll intervals no longer describes the present."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: bool
    body: dict[str, Any]


def reading_age_s(service: PowerwallService, now: datetime | None = None) -> float | None:
    """Seconds since the last successful poll; None before the first."""
    last = service.stats.last_success_time
    if last is None:
        return None
    return max(0.0, ((now or datetime.now(UTC)) - last).total_seconds())


def max_reading_age_s(service: PowerwallService) -> float:
    return FRESH_POLL_INTERVALS * service.settings.pw_poll_interval


def health_report(service: PowerwallService) -> HealthReport:
    views = service.health.views()
    reasons: list[str] = []
    for name, view in views.items():
        if view.state in (State.OK, State.DISABLED):
            continue
        why = view.last_error or view.detail
        if view.state is State.STARTING:
            why = why or "no answer yet"
        reasons.append(f"{name} is {view.state.value}" + (f": {why}" if why else ""))
    age = reading_age_s(service)
    limit = max_reading_age_s(service)
    if age is None:
        reasons.append("no reading yet")
    elif age > limit:
        reasons.append(f"the last reading is {age:.1f} s old (more than {limit:g} s)")
    running = service.loop_running
    if not running:
        reasons.append("the polling loop is not running")
    overall = service.overall_state()
    status = overall.value
    if reasons and overall is State.OK:
        status = State.DEGRADED.value
    stats = service.stats
    body: dict[str, Any] = {
        "healthy": not reasons,
        "status": status,
        "reasons": reasons,
        "components": {name: view.as_dict() for name, view in views.items()},
        "consecutive_failures": stats.consecutive_failures,
        "last_poll_time": _iso(stats.last_poll_time),
        "last_success_time": _iso(stats.last_success_time),
        "last_reading_age_seconds": age,
        "max_reading_age_seconds": limit,
        "background_task_running": running,
    }
    return HealthReport(not reasons, body)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
