"""`check-config` as a real process: what a user sees on stdout, stderr and in the exit code.

One-shot commands run with `subprocess.run` and a timeout, which kills the child if it hangs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import clean_env

CONFIG_PREFIXES = ("PW_", "INFLUX_", "MQTT_", "API_", "STORE_", "DATA_DIR", "SITE_NAME", "POWERWALL_")
SECRETS = {
    "PW_CUSTOMER_PASSWORD": "cust-Pa55word",
    "PW_GATEWAY_PASSWORD": "GW-label-pass",
    "PW_WIFI_PASSWORD": "wifi-hunter2",
    "INFLUX_TOKEN": "influx-tok-123",
    "INFLUX_PASSWORD": "influx-pw-456",
    "MQTT_PASSWORD": "mqtt-pw-789",
    "MQTT_HEALTH_PASSWORD": "health-pw-000",
    "API_TOKEN": "api-token-abc",
}


def run_cli(
    cwd: Path, env: dict[str, str], *args: str, command: tuple[str, ...] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in clean_env().items() if not k.startswith(CONFIG_PREFIXES)}
    argv = command or (sys.executable, "-m", "powerwall_service.cli")
    return subprocess.run(
        [*argv, "check-config", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("PW_POLL_INTERVAL", "0"),
        ("INFLUX_TIMEOUT", "ten"),
        ("API_PORT", "65536"),
        ("MQTT_QOS", "3"),
        ("MQTT_RETAIN", "sometimes"),
        ("PW_LOG_LEVEL", "chatty"),
        ("INFLUX_API", "v3"),
        ("INFLUX_URL", "ftp://influx.local"),
    ],
)
def test_a_bad_value_stops_the_process_with_exit_2_and_one_line(tmp_path: Path, key: str, bad: str) -> None:
    result = run_cli(tmp_path, {"PW_GATEWAY_PASSWORD": "GW-label-pass", key: bad})
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"configuration error: {key} ")
    assert "GW-label-pass" not in result.stderr


def test_secrets_from_a_file_and_the_environment_are_never_printed(tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    file_secrets = {key: f"file-{value}" for key, value in SECRETS.items()}
    env_file.write_text("".join(f"{key}={value}\n" for key, value in file_secrets.items()))
    settings = {"INFLUX_URL": "http://127.0.0.1:8086", "INFLUX_BUCKET": "pw", "PW_LOG_LEVEL": "DEBUG"}
    half = dict(list(SECRETS.items())[::2])
    result = run_cli(tmp_path, {**settings, **half}, "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    for secret in [*SECRETS.values(), *file_secrets.values()]:
        assert secret not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for key in SECRETS:
        assert f"{key}=***" in lines


def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PW_GATEWAY_PASSWORD=x\nSITE_NAME=from file\nPW_POLL_INTERVAL=2\n")
    result = run_cli(tmp_path, {"PW_POLL_INTERVAL": "0.5"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "SITE_NAME=from file" in lines
    assert "PW_POLL_INTERVAL=0.5" in lines


def test_powerwall_env_file_and_the_installed_command(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.env"
    chosen.write_text("PW_GATEWAY_PASSWORD=x\nAPI_PORT=8123\n")
    command = (str(Path(sys.executable).with_name("powerwall-influx")),)
    result = run_cli(tmp_path, {"POWERWALL_ENV_FILE": str(chosen)}, command=command)
    assert result.returncode == 0, result.stderr
    assert "API_PORT=8123" in result.stdout.splitlines()
    missing = run_cli(tmp_path, {"POWERWALL_ENV_FILE": str(tmp_path / "nope.env")}, command=command)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [missing.stderr.strip()]
    assert "POWERWALL_ENV_FILE" in missing.stderr


def test_store_path_follows_data_dir(tmp_path: Path) -> None:
    result = run_cli(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "STORE_PATH=data/store.db" in result.stdout.splitlines()
    moved = run_cli(tmp_path, {"DATA_DIR": "/srv/powerwall"})
    assert "STORE_PATH=/srv/powerwall/store.db" in moved.stdout.splitlines()
