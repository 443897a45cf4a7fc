"""What reaches the log: no secrets, from any library, and a failing poll's error once, not forever."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pypowerwall
import pytest

from powerwall_service.config import Settings, parse_settings
from powerwall_service.logging_setup import RepeatFilter, configure_logging
from tests.fixtures.processes import free_port

GATEWAY_PASSWORD = "Gw+pa ss/word&1"
TOKEN = "influx-TOKEN-9f8e7d"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def settings(level: str = "DEBUG") -> Settings:
    return parse_settings(
        {
            "PW_GATEWAY_PASSWORD": GATEWAY_PASSWORD,
            "INFLUX_URL": "http://127.0.0.1:1",
            "INFLUX_TOKEN": TOKEN,
            "INFLUX_BUCKET": "b",
            "PW_LOG_LEVEL": level,
        }
    )


def test_secrets_are_hidden_in_messages_arguments_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(settings())
    log = logging.getLogger("urllib3.connectionpool")
    log.debug("POST /api/v2/write Authorization: Token %s", TOKEN)
    log.info(f"login body {{'password': '{GATEWAY_PASSWORD}'}}")
    log.warning("GET /login?pw=%s", quote(GATEWAY_PASSWORD, safe=""))
    try:
        raise RuntimeError(f"auth failed for {GATEWAY_PASSWORD}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("request failed with %r", TOKEN)
    err = capsys.readouterr().err
    assert GATEWAY_PASSWORD not in err
    assert quote(GATEWAY_PASSWORD, safe="") not in err
    assert TOKEN not in err
    assert err.count("***") == 5
    assert "Traceback" in err
    assert "RuntimeError: auth failed for ***" in err


def test_warnings_go_through_the_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(settings())
    warnings.warn(f"unverified request with token {TOKEN}", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "unverified request with token ***" in err
    assert TOKEN not in err


def test_handlers_installed_before_are_replaced(capsys: pytest.CaptureFixture[str]) -> None:
    logging.basicConfig(force=True, format="%(message)s")  # what pypowerwall does at import
    handler = configure_logging(settings("WARNING"))
    assert logging.getLogger().handlers == [handler]
    logging.getLogger("pypowerwall").info("hidden at WARNING")
    logging.getLogger("pypowerwall").warning("shown")
    err = capsys.readouterr().err
    assert "hidden at WARNING" not in err
    assert err.count("shown") == 1


def test_a_repeated_error_is_printed_once_then_with_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    now = [1000.0]
    handler = logging.StreamHandler()
    handler.addFilter(RepeatFilter(window=300.0, clock=lambda: now[0]))
    log = logging.getLogger("test.repeat")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        for attempt in range(12):
            log.error("poll %d failed: timeout after 10 s", attempt)
            now[0] += 5.0
        log.error("a different error")
        log.info("info is never held back")
        log.info("info is never held back")
        now[0] = 1000.0 + 301.0
        log.error("poll 99 failed: timeout after 10 s")
        log.error("poll 100 failed: timeout after 10 s")
    finally:
        log.removeHandler(handler)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "poll 0 failed: timeout after 10 s",
        "a different error",
        "info is never held back",
        "info is never held back",
        "poll 99 failed: timeout after 10 s (repeated 11 times in the last 301 s)",
    ]


def test_pypowerwall_against_a_dead_gateway_logs_its_error_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    configure_logging(settings("INFO"))
    pw = pypowerwall.Powerwall(
        host=f"127.0.0.1:{free_port()}",
        password=GATEWAY_PASSWORD,
        email="user@example.com",
        timezone="UTC",
        pwcacheexpire=0,
        timeout=1,
        auto_select=False,
        retry_modes=False,
        cachefile=str(tmp_path / ".powerwall"),
    )
    for _ in range(20):
        pw.power()
    err = capsys.readouterr().err
    aggregates = [line for line in err.splitlines() if "/api/meters/aggregates" in line]
    assert len(aggregates) == 1, err
    assert "pypowerwall" in aggregates[0]
    assert GATEWAY_PASSWORD not in err
