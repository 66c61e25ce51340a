"""The shipped systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import subprocess
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
