"""Property-based requests from the served OpenAPI document against a real `serve`: no 5xx, ever.

The service polls a frozen simulator and is healthy throughout, so a 5xx can only be a defect
(the documented 503 of /health means unhealthy, 502 a failed gateway read; neither happens here).
Both valid requests and requests that break the schema are generated; examples are few and the
run is time-boxed by hypothesis' example count to keep the suite fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.fixtures.processes import ManagedProcess
from tests.fixtures.service_process import ServeProcess, start_serve
from tests.fixtures.simulator import start_simulator

TOKEN = "schema-token-1"
EXAMPLES = 80


@pytest.fixture(scope="module")
def service(
    module_processes: Callable[..., ManagedProcess], tmp_path_factory: pytest.TempPathFactory
) -> ServeProcess:
    sim = start_simulator(module_processes, flavour="pw2")
    serve = start_serve(
        module_processes,
        sim.host,
        tmp_path_factory.mktemp("schemathesis"),
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        API_TOKEN=TOKEN,
        PW_CACHE_EXPIRE="0",
        PW_POLL_INTERVAL="1",
    )
    serve.wait_for_health(200, timeout=30)
    return serve


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_server_error(service: ServeProcess, mode: GenerationMode) -> None:
    schema: Any = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    calls: list[int] = []

    @given(case=schema.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def request_once(case: Any) -> None:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error], timeout=15
        )
        calls.append(response.status_code)

    request_once()
    assert len(calls) >= EXAMPLES / 2, "too few requests reached the service"
    assert service.get("/health").status_code == 200
