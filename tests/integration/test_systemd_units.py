"""The shipped systemd units: `systemd-analyze verify` clean, no restart loop on a bad
config, resource limits, and the security exposure that docs/operations.md states."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import need_binary

UNITS = Path(__file__).resolve().parents[2] / "systemd"


def _verify(unit: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart exists: point it at a binary every host has.
    text = (UNITS / unit).read_text().replace("/usr/bin/drwatch ", "/bin/true ")
    copy = tmp_path / unit
    copy.write_text(text)
    return subprocess.run(
        [need_binary("systemd-analyze"), "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.services
@pytest.mark.parametrize("unit", ["drwatch.service", "drwatch-agent.service"])
def test_unit_verifies_cleanly(unit: str, tmp_path: Path) -> None:
    """systemd accepts the unit with no error and no warning about it."""
    result = _verify(unit, tmp_path)
    assert result.returncode == 0, result.stderr
    assert unit not in result.stderr, result.stderr


def test_daemon_unit_uses_notify_and_watchdog() -> None:
    """The daemon unit waits for READY=1 and restarts a loop that stops sending heartbeats."""
    text = (UNITS / "drwatch.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "StateDirectory="):
        assert line in text
    assert "WatchdogSec=" in text


def service_section(unit: str) -> dict[str, list[str]]:
    """The [Service] directives of a shipped unit, each with every value it was given."""
    directives: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


@pytest.mark.parametrize(
    ("unit", "command"),
    [("drwatch.service", "run"), ("drwatch-agent.service", "agent")],
)
def test_a_bad_config_does_not_restart_loop(unit: str, command: str, tmp_path: Path) -> None:
    """The command exits 2 on a bad config, and its unit restarts on failure except for
    exit 2: a typo leaves the unit failed with its message, not restarting every few
    seconds. (No systemd runs as PID 1 here, so the unit's directives are checked.)"""
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = not [valid toml\n")
    out = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", command, "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    service = service_section(unit)
    assert service["Restart"] == ["on-failure"]
    prevented = {code for value in service["RestartPreventExitStatus"] for code in value.split()}
    assert "2" in prevented


@pytest.mark.parametrize("unit", ["drwatch.service", "drwatch-agent.service"])
def test_units_bound_memory_and_tasks(unit: str) -> None:
    """Both units have a hard memory limit and a task limit."""
    service = service_section(unit)
    for key in ("MemoryMax", "TasksMax", "NoNewPrivileges", "PrivateMounts"):
        assert key in service, key


def _exposure(unit: str, tmp_path: Path) -> str:
    text = (UNITS / unit).read_text().replace("/usr/bin/drwatch ", "/bin/true ")
    copy = tmp_path / unit
    copy.write_text(text)
    out = subprocess.run(
        [need_binary("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert found, out.stdout + out.stderr
    return found.group(1)


@pytest.mark.services
@pytest.mark.parametrize("unit", ["drwatch.service", "drwatch-agent.service"])
def test_documented_security_score_is_the_measured_one(unit: str, tmp_path: Path) -> None:
    """docs/operations.md states the `systemd-analyze security` exposure of each unit,
    and it is what systemd measures for the unit as shipped."""
    score = _exposure(unit, tmp_path)
    docs = (UNITS.parent / "docs" / "operations.md").read_text()
    assert f"| `{unit}` | {score} |" in docs, f"{unit} measures {score}"
