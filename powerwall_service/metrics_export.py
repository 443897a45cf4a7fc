"""Prometheus text for GET /metrics: the latest reading, named after the catalogue, and service counters.

A scrape never touches the gateway: it renders what the polling loop already has, so any number of
scrapers cost the gateway nothing (the Go exporter's scrape-driven polling is what users complain
about). A reading older than three poll intervals is left out rather than shown as the present,
and an unknown value is absent, never 0. Lifetime energy counters are Prometheus counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from powerwall_service.catalogue import Metric as CatalogueMetric
from powerwall_service.catalogue import UnknownMetricError, metric, unit_metric
from powerwall_service.health import State
from powerwall_service.health_report import health_report, max_reading_age_s, reading_age_s
from powerwall_service.reading import FieldValue, Reading

if TYPE_CHECKING:
    from powerwall_service.service import PowerwallService

PREFIX = "powerwall_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(service: PowerwallService, outbox: Mapping[str, float | int | None] | None) -> bytes:
    """The exposition text. `outbox` holds the store's numbers (None when the store did not answer)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServiceCollector(service, outbox))
    return generate_latest(registry)


class _ServiceCollector(Collector):
    def __init__(self, service: PowerwallService, outbox: Mapping[str, float | int | None] | None) -> None:
        self._service = service
        self._outbox = outbox

    def collect(self) -> Iterator[Metric]:
        latest = self._service.latest
        age = reading_age_s(self._service)
        fresh = age is not None and age <= max_reading_age_s(self._service)
        if latest is not None and latest.reading is not None and fresh:
            yield from _reading_families(latest.reading)
        yield from _service_families(self._service, age)
        if self._outbox is not None:
            yield from _outbox_families(self._outbox)


def _help(definition: CatalogueMetric[object]) -> str:
    unit = f" Unit: {definition.unit}." if definition.unit else ""
    return f"{definition.description}{unit}"


def _family(
    name: str,
    definition: CatalogueMetric[object],
    labels: list[str],
    rows: Iterable[tuple[list[str], FieldValue]],
) -> Metric:
    """One family for one catalogue metric: text as an info metric, energy totals as counters."""
    full = f"{PREFIX}{name}"
    if definition.kind is str:
        info = InfoMetricFamily(full, _help(definition), labels=labels)
        for values, value in rows:
            info.add_metric(values, {"value": str(value)})
        return info
    family: CounterMetricFamily | GaugeMetricFamily
    if definition.state_class == "total_increasing":
        family = CounterMetricFamily(full, _help(definition), labels=labels)
    else:
        family = GaugeMetricFamily(full, _help(definition), labels=labels)
    for values, value in rows:
        family.add_metric(values, float(value))
    return family


def _reading_families(reading: Reading) -> Iterator[Metric]:
    for name, value in reading.fields.items():
        try:
            definition: CatalogueMetric[object] = metric(name)
        except UnknownMetricError:
            continue
        yield _family(name, definition, ["site"], [([reading.site], value)])
    by_name: dict[str, list[tuple[list[str], FieldValue]]] = {}
    for serial, values in reading.units.items():
        for name, value in values.items():
            by_name.setdefault(name, []).append(([reading.site, serial], value))
    for name, rows in by_name.items():
        try:
            unit_definition: CatalogueMetric[object] = unit_metric(name)
        except UnknownMetricError:
            continue
        yield _family(f"unit_{name}", unit_definition, ["site", "serial"], rows)


def _service_families(service: PowerwallService, age: float | None) -> Iterator[Metric]:
    stats = service.stats
    own = f"{PREFIX}service_"
    for name, value, text in (
        ("polls", stats.polls, "Polls of the gateway, scheduled and live."),
        ("poll_successes", stats.successes, "Polls that produced a reading."),
        ("poll_failures", stats.failures, "Polls that failed."),
        ("gateway_requests", stats.gateway_requests, "HTTP requests made to the gateway."),
        ("readings_held_back", stats.held_back, "Readings not stored because the clock went back."),
    ):
        yield CounterMetricFamily(f"{own}{name}", text, value=value)
    yield GaugeMetricFamily(
        f"{own}consecutive_failures", "Failed polls since the last success.", value=stats.consecutive_failures
    )
    if stats.last_success_time is not None:
        yield GaugeMetricFamily(
            f"{own}last_success_timestamp_seconds",
            "Unix time of the last successful poll.",
            value=stats.last_success_time.timestamp(),
        )
    if age is not None:
        yield GaugeMetricFamily(f"{own}reading_age_seconds", "Age of the latest reading.", value=age)
    yield GaugeMetricFamily(
        f"{own}healthy", "1 when /health answers 200, else 0.", value=float(health_report(service).healthy)
    )
    states = StateSetMetricFamily(
        f"{own}component_state", "Health state of each component.", labels=["component"]
    )
    for component, view in service.health.views().items():
        states.add_metric([component], {state.value: view.state is state for state in State})
    yield states
    for name, samples, text in (
        ("poll_duration_seconds", stats.durations_s, "Poll duration over the last 1000 polls."),
        ("poll_start_lag_seconds", stats.start_lag_s, "Poll start lag behind schedule, last 1000 polls."),
    ):
        if samples:
            family = GaugeMetricFamily(f"{own}{name}", text, labels=["quantile"])
            for label, q in (("0.5", 0.5), ("0.99", 0.99)):
                family.add_metric([label], quantile(samples, q))
            yield family


def _outbox_families(outbox: Mapping[str, float | int | None]) -> Iterator[Metric]:
    own = f"{PREFIX}store_"
    for key, value in outbox.items():
        if value is not None:
            yield GaugeMetricFamily(
                f"{own}{key}", f"Local store: {key.replace('_', ' ')}.", value=float(value)
            )


def quantile(samples: Iterable[float], q: float) -> float:
    """The q-quantile by nearest rank; at least one sample is required."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
