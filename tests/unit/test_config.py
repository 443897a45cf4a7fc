"""Configuration as a user meets it: `check-config` output, exit codes and error lines.

The key lists below are written by hand from the spec's configuration table and issue 4, not
read from config.py, so a key that config.py forgets or mistypes fails here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from powerwall_service.cli import main
from powerwall_service.config import (
    ConfigError,
    check_api_exposure,
    check_gateway_credentials,
    key_specs,
    load_settings,
    parse_settings,
    redacted_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The spec's table (with INFLUX_VERIFY_TLS deliberately true) plus issue 4's keys and defaults.
SPEC_DEFAULTS = {
    "INFLUX_URL": "",
    "INFLUX_ORG": "",
    "INFLUX_BUCKET": "",
    "INFLUX_TOKEN": "",
    "INFLUX_MEASUREMENT": "powerwall",
    "INFLUX_TIMEOUT": "10",
    "INFLUX_VERIFY_TLS": "true",
    "PW_HOST": "192.168.91.1",
    "PW_TIMEZONE": "UTC",
    "PW_CACHE_EXPIRE": "5",
    "PW_REQUEST_TIMEOUT": "10",
    "PW_POLL_INTERVAL": "5",
    "PW_CUSTOMER_EMAIL": "",
    "PW_CUSTOMER_PASSWORD": "",
    "PW_CONNECT_WIFI": "false",
    "PW_WIFI_SSID": "",
    "PW_WIFI_PASSWORD": "",
    "PW_WIFI_INTERFACE": "",
    "MQTT_ENABLED": "false",
    "MQTT_HOST": "",
    "MQTT_PORT": "1883",
    "MQTT_USERNAME": "",
    "MQTT_PASSWORD": "",
    "MQTT_TOPIC_PREFIX": "homeassistant/sensor/powerwall",
    "MQTT_QOS": "1",
    "MQTT_RETAIN": "true",
    "MQTT_METRICS": "",
    "MQTT_HEALTH_ENABLED": "true",
    "MQTT_HEALTH_HOST": "",
    "MQTT_HEALTH_PORT": "1883",
    "MQTT_HEALTH_USERNAME": "",
    "MQTT_HEALTH_PASSWORD": "",
    "MQTT_HEALTH_TOPIC_PREFIX": "homeassistant/sensor/powerwall_health",
    "MQTT_HEALTH_INTERVAL": "60",
    "MQTT_HEALTH_QOS": "1",
    "PW_LOG_LEVEL": "INFO",
    "INFLUX_API": "v2",
    "INFLUX_DATABASE": "",
    "INFLUX_RETENTION_POLICY": "",
    "INFLUX_USERNAME": "",
    "INFLUX_PASSWORD": "",
    "API_HOST": "127.0.0.1",
    "API_PORT": "8000",
    "API_TOKEN": "",
    "DATA_DIR": "data",
    "STORE_PATH": "data/store.db",
    "STORE_RETENTION_DAYS": "7",
    "STORE_MAX_MB": "500",
    "SITE_NAME": "",
    "PW_RATE_LIMIT_COOLDOWN": "300",
    "PW_AUTH_BACKOFF_MAX": "300",
}
ALL_KEYS = [*SPEC_DEFAULTS, "PW_GATEWAY_PASSWORD"]

# Every key with a type or a range, and values that must be refused.
BAD_VALUES: list[tuple[str, str]] = [
    *[
        (key, bad)
        for key in (
            "PW_POLL_INTERVAL",
            "PW_REQUEST_TIMEOUT",
            "INFLUX_TIMEOUT",
            "MQTT_HEALTH_INTERVAL",
            "PW_RATE_LIMIT_COOLDOWN",
            "PW_AUTH_BACKOFF_MAX",
            "STORE_RETENTION_DAYS",
            "STORE_MAX_MB",
        )
        for bad in ("five", "0", "-1", "nan", "inf")
    ],
    ("PW_CACHE_EXPIRE", "soon"),
    ("PW_CACHE_EXPIRE", "-1"),
    *[
        (key, bad)
        for key in ("MQTT_PORT", "MQTT_HEALTH_PORT", "API_PORT")
        for bad in ("0", "65536", "http", "18.5")
    ],
    *[(key, bad) for key in ("MQTT_QOS", "MQTT_HEALTH_QOS") for bad in ("3", "-1", "one")],
    *[
        (key, bad)
        for key in (
            "INFLUX_VERIFY_TLS",
            "PW_CONNECT_WIFI",
            "MQTT_ENABLED",
            "MQTT_RETAIN",
            "MQTT_HEALTH_ENABLED",
        )
        for bad in ("maybe", "2")
    ],
    ("PW_LOG_LEVEL", "LOUD"),
    ("PW_LOG_LEVEL", "5"),
    ("INFLUX_API", "v3"),
    ("INFLUX_URL", "ftp://influx.local"),
    ("INFLUX_URL", "influx.local:8086"),
    ("INFLUX_URL", "http://"),
    ("INFLUX_URL", "http://influx.local:99999"),
    ("PW_TIMEZONE", "Mars/Olympus_Mons"),
    ("PW_HOST", "https://192.168.91.1"),
    ("PW_HOST", "192.168.91.1/api"),
    ("PW_HOST", "192.168.91.1:70000"),
    ("PW_HOST", "192.168.91.1:https"),
    ("MQTT_TOPIC_PREFIX", "homeassistant/#"),
    ("MQTT_HEALTH_TOPIC_PREFIX", "a/+/b"),
    ("MQTT_METRICS", "battery_percentage,no_such_metric"),
]


@pytest.fixture(autouse=True)
def clean_config_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the machine: no env keys, no ./.env (cwd is empty)."""
    for key in [*ALL_KEYS, "POWERWALL_ENV_FILE"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


def check_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[int, str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(["check-config"])
    out, err = capsys.readouterr()
    return code, out, err


def effective(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize(("key", "bad"), BAD_VALUES)
def test_a_bad_value_exits_2_with_one_line_naming_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str, bad: str
) -> None:
    code, out, err = check_config(capsys, monkeypatch, {"PW_GATEWAY_PASSWORD": "gw-secret", key: bad})
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("configuration error: ")
    assert key in lines[0]


def test_defaults_are_the_specs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = check_config(capsys, monkeypatch, {"PW_GATEWAY_PASSWORD": "gw-secret"})
    assert (code, err) == (0, "")
    shown = effective(out)
    assert {key: shown[key] for key in SPEC_DEFAULTS} == SPEC_DEFAULTS
    assert shown["PW_GATEWAY_PASSWORD"] == "***"


def test_check_config_never_prints_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "PW_CUSTOMER_PASSWORD": "cust-Pa55word",
        "PW_GATEWAY_PASSWORD": "GW-label-pass",
        "PW_WIFI_PASSWORD": "wifi-hunter2",
        "INFLUX_TOKEN": "influx-tok-123",
        "INFLUX_PASSWORD": "influx-pw-456",
        "MQTT_PASSWORD": "mqtt-pw-789",
        "MQTT_HEALTH_PASSWORD": "health-pw-000",
        "API_TOKEN": "api-token-abc",
    }
    env = {
        **secrets,
        "INFLUX_URL": "http://127.0.0.1:8086",
        "INFLUX_BUCKET": "powerwall",
        "MQTT_ENABLED": "true",
        "MQTT_HOST": "127.0.0.1",
    }
    code, out, err = check_config(capsys, monkeypatch, env)
    assert code == 0
    for secret in secrets.values():
        assert secret not in out + err
    shown = effective(out)
    assert all(shown[key] == "***" for key in secrets)
    assert shown["INFLUX_URL"] == "http://127.0.0.1:8086"


def test_a_secret_in_a_bad_value_is_not_echoed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"PW_GATEWAY_PASSWORD": "x", "INFLUX_URL": "http://admin:s3cr3t-in-url@influx.local"}
    code, _, err = check_config(capsys, monkeypatch, env)
    assert code == 2
    assert "INFLUX_URL" in err
    assert "s3cr3t-in-url" not in err


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INFLUX_URL": "http://127.0.0.1:8086", "INFLUX_BUCKET": "b"}, "INFLUX_TOKEN"),
        ({"INFLUX_URL": "http://127.0.0.1:8086", "INFLUX_TOKEN": "t"}, "INFLUX_BUCKET"),
        ({"INFLUX_URL": "http://127.0.0.1:8086", "INFLUX_API": "v1"}, "INFLUX_DATABASE"),
        ({"MQTT_ENABLED": "true"}, "MQTT_HOST"),
        ({"PW_CONNECT_WIFI": "true"}, "PW_WIFI_SSID"),
    ],
)
def test_rules_across_keys_name_the_missing_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    code, _, err = check_config(capsys, monkeypatch, {"PW_CUSTOMER_PASSWORD": "c", **env})
    assert code == 2
    assert len(err.splitlines()) == 1
    assert named in err


def test_nothing_configured_loads_but_cannot_read_a_gateway(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = check_config(capsys, monkeypatch, {})
    assert (code, err) == (0, "")
    assert effective(out)["PW_HOST"] == "192.168.91.1"
    with pytest.raises(ConfigError, match="PW_CUSTOMER_PASSWORD or PW_GATEWAY_PASSWORD"):
        check_gateway_credentials(load_settings(None))
    for one in ({"PW_CUSTOMER_PASSWORD": "c"}, {"PW_GATEWAY_PASSWORD": "g"}):
        check_gateway_credentials(parse_settings(one))


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"INFLUX_URL": "http://127.0.0.1:8086", "INFLUX_API": "v1", "INFLUX_DATABASE": "pw"},
        {"MQTT_HEALTH_ENABLED": "true"},
        {"INFLUX_URL": "https://influx.example:8086", "INFLUX_TOKEN": "t", "INFLUX_BUCKET": "b"},
    ],
)
def test_valid_combinations_are_accepted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    code, _, err = check_config(capsys, monkeypatch, {"PW_GATEWAY_PASSWORD": "g", **env})
    assert (code, err) == (0, "")


def test_env_file_then_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("PW_GATEWAY_PASSWORD=from-file\nPW_POLL_INTERVAL=2.5\nSITE_NAME='My Home'\n")
    monkeypatch.setenv("PW_POLL_INTERVAL", "0.25")
    settings = load_settings(str(env_file))
    assert settings.pw_gateway_password == "from-file"
    assert settings.site_name == "My Home"
    assert settings.pw_poll_interval == 0.25


def test_env_file_choice_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PW_GATEWAY_PASSWORD=x\nSITE_NAME=dot-env\n")
    (tmp_path / "variable.env").write_text("PW_GATEWAY_PASSWORD=x\nSITE_NAME=variable\n")
    (tmp_path / "option.env").write_text("PW_GATEWAY_PASSWORD=x\nSITE_NAME=option\n")
    assert load_settings(None).site_name == "dot-env"
    monkeypatch.setenv("POWERWALL_ENV_FILE", str(tmp_path / "variable.env"))
    assert load_settings(None).site_name == "variable"
    assert load_settings(str(tmp_path / "option.env")).site_name == "option"


def test_a_missing_named_env_file_is_an_error_but_no_dot_env_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PW_GATEWAY_PASSWORD", "x")
    assert load_settings(None).pw_gateway_password == "x"
    assert main(["check-config", "--env-file", str(tmp_path / "absent.env")]) == 2
    assert "absent.env" in capsys.readouterr().err
    monkeypatch.setenv("POWERWALL_ENV_FILE", str(tmp_path / "gone.env"))
    with pytest.raises(ConfigError, match="POWERWALL_ENV_FILE"):
        load_settings(None)


def test_load_settings_leaves_the_environment_alone(tmp_path: Path) -> None:
    env_file = tmp_path / "a.env"
    env_file.write_text("PW_GATEWAY_PASSWORD=x\nSITE_NAME=file-only\n")
    load_settings(str(env_file))
    assert "SITE_NAME" not in os.environ


def test_derived_defaults_follow_their_source_keys() -> None:
    settings = parse_settings(
        {
            "PW_GATEWAY_PASSWORD": "g",
            "DATA_DIR": "/var/lib/pw",
            "MQTT_HOST": "broker.lan",
            "MQTT_PORT": "1884",
            "MQTT_USERNAME": "u",
            "MQTT_PASSWORD": "p",
        }
    )
    assert settings.store_path == Path("/var/lib/pw/store.db")
    assert (settings.mqtt_health_host, settings.mqtt_health_port) == ("broker.lan", 1884)
    assert (settings.mqtt_health_username, settings.mqtt_health_password) == ("u", "p")
    own = parse_settings(
        {"PW_GATEWAY_PASSWORD": "g", "MQTT_HOST": "a", "MQTT_HEALTH_HOST": "b", "STORE_PATH": "/s.db"}
    )
    assert (own.mqtt_health_host, own.store_path) == ("b", Path("/s.db"))


def test_types_and_fractions() -> None:
    settings = parse_settings(
        {
            "PW_GATEWAY_PASSWORD": "g",
            "PW_POLL_INTERVAL": "0.5",
            "PW_REQUEST_TIMEOUT": "2",
            "MQTT_RETAIN": "off",
            "PW_LOG_LEVEL": "debug",
            "MQTT_METRICS": "battery_percentage, string_a_power_w",
        }
    )
    assert settings.pw_poll_interval == 0.5
    assert isinstance(settings.pw_request_timeout, float)
    assert settings.mqtt_retain is False
    assert settings.pw_log_level == "DEBUG"
    assert settings.mqtt_metrics == ("battery_percentage", "string_a_power_w")


@pytest.mark.parametrize(("poll", "cache", "expected"), [(5, 5, 2.5), (1, 5, 0.5), (60, 5, 5.0), (5, 0, 0.0)])
def test_gateway_cache_is_capped_below_the_poll_interval(poll: float, cache: float, expected: float) -> None:
    settings = parse_settings(
        {"PW_GATEWAY_PASSWORD": "g", "PW_POLL_INTERVAL": str(poll), "PW_CACHE_EXPIRE": str(cache)}
    )
    assert settings.gateway_cache_seconds == expected


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("0.0.0.0", None, True),
        ("192.168.1.10", None, True),
        ("::", None, True),
        ("0.0.0.0", "t0k", False),
    ],
)
def test_api_beyond_loopback_needs_a_token(host: str, token: str | None, refused: bool) -> None:
    env = {"PW_GATEWAY_PASSWORD": "g", "API_HOST": host, **({"API_TOKEN": token} if token else {})}
    settings = parse_settings(env)
    if refused:
        with pytest.raises(ConfigError, match="API_TOKEN"):
            check_api_exposure(settings)
    else:
        check_api_exposure(settings)


def test_serve_host_option_is_checked_too() -> None:
    settings = parse_settings({"PW_GATEWAY_PASSWORD": "g"})
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0"):
        check_api_exposure(settings, host="0.0.0.0")


def test_redacted_settings_are_json_with_secrets_hidden() -> None:
    settings = parse_settings({"PW_GATEWAY_PASSWORD": "gw-pass", "API_TOKEN": "tok"})
    shown = redacted_settings(settings)
    text = json.dumps(shown)
    assert "gw-pass" not in text
    assert 'tok"' not in text
    assert shown["PW_GATEWAY_PASSWORD"] == "***"
    assert shown["PW_CUSTOMER_PASSWORD"] is None
    assert shown["PW_POLL_INTERVAL"] == 5.0
    assert set(shown) == set(ALL_KEYS)


def test_env_example_documents_every_key_with_the_defaults() -> None:
    example = dotenv_values(REPO_ROOT / ".env.example")
    assert set(example) == set(ALL_KEYS)
    from_example = parse_settings({**example, "PW_GATEWAY_PASSWORD": "g"})
    assert from_example == parse_settings({"PW_GATEWAY_PASSWORD": "g"})


def test_every_typed_or_checked_key_has_a_bad_value_case() -> None:
    typed = {spec.key for spec in key_specs() if spec.check is not None or spec.kind in (int, float, bool)}
    assert typed <= {key for key, _ in BAD_VALUES}
