"""Fault rules: what a tester may ask for, what is refused and why, and which rule a request gets."""

from __future__ import annotations

from typing import Any

import pytest

from powerwall_service.simulator.faults import FaultBook, FaultRuleError, error_body, parse_rule


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ([], "must be a JSON object"),
        ({"status": 500}, "path must be a glob"),
        ({"path": "/api/*", "status": 418}, "status must be one of"),
        ({"path": "/api/*", "status": True}, "status must be one of"),
        ({"path": "/api/*", "colour": "red", "status": 500}, "unknown fields"),
        ({"path": "/_sim/state", "status": 500}, "faults never touch"),
        ({"path": "/api/*", "delay_s": -1}, "delay_s must be a number"),
        ({"path": "/api/*", "reset": "yes"}, "reset must be true or false"),
        ({"path": "/api/*", "reset": True, "silent": True}, "exclude each other"),
        ({"path": "/api/*", "reset": True, "status": 500}, "cannot apply"),
        ({"path": "/api/*", "status": 500, "retry_after": 5}, "goes with status 429 or 503"),
        ({"path": "/api/*", "status": 500, "count": 0}, "count must be a whole number"),
        ({"path": "/api/*"}, "does nothing"),
    ],
)
def test_a_bad_rule_is_refused_with_its_reason(rule: Any, reason: str) -> None:
    with pytest.raises(FaultRuleError, match=reason):
        parse_rule(rule)


def test_the_first_matching_rule_wins_until_its_count_is_spent() -> None:
    book = FaultBook()
    book.add(parse_rule({"path": "/api/meters/*", "status": 503, "count": 2}))
    book.add(parse_rule({"path": "/api/*", "status": 500}))
    book.add(parse_rule({"path": "*", "status": 404}))
    taken = [book.take("/api/meters/aggregates") for _ in range(3)]
    assert [rule.status if rule else None for rule in taken] == [503, 503, 500]
    assert book.take("/tedapi/v1") == parse_rule({"path": "*", "status": 404})
    assert book.take("/_sim/requests") is None
    assert [(f["applied"], f["remaining"]) for f in book.listing()] == [(2, 0), (1, None), (1, None)]
    assert book.clear() == 3
    assert book.take("/api/meters/aggregates") is None


def test_error_bodies_are_the_gateways_own() -> None:
    assert error_body(401, "/api/login/Basic") == {
        "code": 401,
        "error": "bad credentials",
        "message": "Login Error",
    }
    assert error_body(401, "/api/status") == {"code": 401, "message": "Token Expired"}
    assert error_body(429, "/api/status")["error"] == "Api Limit reached for this endpoint"
    assert error_body(503, "/tedapi/v1") == {
        "code": 503,
        "error": "Service Unavailable",
        "message": "Service Unavailable",
    }
