"""`strings` and `python -m powerwall_service.string_status`: the PV strings as the gateway has them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.processes import PYTHON, clean_env
from tests.fixtures.simulator import Simulator


@pytest.mark.parametrize(
    "command",
    [["-m", "powerwall_service.cli", "strings"], ["-m", "powerwall_service.string_status"]],
    ids=["cli", "module"],
)
def test_every_string_of_every_powerwall_3_is_listed_with_the_truths_values(
    simulator: Callable[..., Simulator], tmp_path: Path, command: list[str]
) -> None:
    sim = simulator(flavour="pw3", powerwalls=2)
    truth = sim.state()["strings"]
    assert any(values["power_w"] > 0 for values in truth.values()), "the sun is up at noon"
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        f"PW_HOST={sim.host}\nPW_GATEWAY_PASSWORD={sim.gateway_password}\nDATA_DIR={tmp_path}\n"
    )
    result = subprocess.run(
        [PYTHON, *command, "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["string", "state"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(truth) == {f"{x}{unit}" for x in "ABCDEF" for unit in ("", "1")}
    for name, values in truth.items():
        _, _, connected, voltage, current, power = rows[name]
        assert connected == ("yes" if values["connected"] else "no")
        assert float(voltage) == pytest.approx(values["voltage_v"], abs=0.05)
        assert float(current) == pytest.approx(values["current_a"], abs=0.05)
        assert float(power) == pytest.approx(values["power_w"], abs=0.5)


def test_an_unreachable_gateway_gives_exit_1_and_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "powerwall_service.cli", "strings"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(
            PW_HOST="127.0.0.1:9", PW_CUSTOMER_PASSWORD="pw", PW_REQUEST_TIMEOUT="2", POWERWALL_ENV_FILE=""
        ),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "PW_HOST" in result.stderr
