"""Property-based requests from the served OpenAPI document against a real `serve`: no 5xx, ever.

The service polls a frozen simulator and is healthy throughout, so a 5xx can only be a defect
(the documented 503 of /health means unhealthy, 502 a failed gateway read; neither happens here).
Examples are few and the run is time-boxed to keep the suite fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures.processes import ManagedProcess
from tests.fixtures.service_process import ServeProcess, start_serve
from tests.fixtures.simulator import Simulator, start_simulator

TOKEN = "schema-token-1"


@pytest.fixture(scope="module")
def service(
    module_processes: Callable[..., ManagedProcess], tmp_path_factory: pytest.TempPathFactory
) -> ServeProcess:
    sim: Simulator = start_simulator(module_processes)
    serve = start_serve(
        module_processes,
        f"127.0.0.1:{sim.port}",
        tmp_path_factory.mktemp("schemathesis"),
        PW_CUSTOMER_PASSWORD=sim.customer_password,
        API_TOKEN=TOKEN,
        PW_CACHE_EXPIRE="0",
        PW_POLL_INTERVAL="1",
    )
    serve.wait_for_health(200)
    return serve


@pytest.fixture(scope="module")
def api_schema(service: ServeProcess) -> Any:
    return schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, service: ServeProcess) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error], timeout=15
    )
