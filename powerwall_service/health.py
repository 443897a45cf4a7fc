"""Health: one registry of components, each saying truthfully whether it works.

Every part that can fail (the gateway, InfluxDB, MQTT, Wi-Fi, the local store) owns one
`Component` and reports into it as things happen; `/health`, `/status` and the MQTT health
monitor only read. A component that has not yet been tried is `starting`, never `ok`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class ComponentView:
    """An immutable copy of a component, safe to hand to another thread or serialise."""

    name: str
    state: State
    since: datetime
    last_success: datetime | None
    last_error: str | None
    detail: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "state": self.state.value,
            "since": self.since.isoformat(),
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "detail": self.detail,
        }


class Component:
    """The health of one part. Thread-safe: the gateway worker thread reports here too."""

    def __init__(self, name: str, enabled: bool = True, detail: str | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._state = State.STARTING if enabled else State.DISABLED
        self._since = _now()
        self._last_success: datetime | None = None
        self._last_error: str | None = None
        self._detail = detail if enabled else (detail or "not configured")

    def ok(self, detail: str | None = None) -> None:
        with self._lock:
            now = _now()
            self._set_state(State.OK, now)
            self._last_success = now
            self._detail = detail

    def fail(self, error: str, state: State = State.DOWN, detail: str | None = None) -> None:
        """Record a failure; `state` is DEGRADED when the service copes (e.g. buffering)."""
        with self._lock:
            self._set_state(state, _now())
            self._last_error = error
            self._detail = detail

    def disable(self, detail: str) -> None:
        with self._lock:
            self._set_state(State.DISABLED, _now())
            self._detail = detail

    def view(self) -> ComponentView:
        with self._lock:
            return ComponentView(
                self.name, self._state, self._since, self._last_success, self._last_error, self._detail
            )

    def _set_state(self, state: State, now: datetime) -> None:
        if state is not self._state:
            self._state = state
            self._since = now


class HealthRegistry:
    """The named components of one running service."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}

    def add(self, name: str, enabled: bool = True, detail: str | None = None) -> Component:
        if name in self._components:
            raise ValueError(f"health component {name!r} registered twice")
        component = Component(name, enabled, detail)
        self._components[name] = component
        return component

    def get(self, name: str) -> Component:
        return self._components[name]

    def views(self) -> dict[str, ComponentView]:
        return {name: component.view() for name, component in self._components.items()}


def _now() -> datetime:
    return datetime.now(UTC)
