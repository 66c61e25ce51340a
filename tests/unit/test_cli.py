"""The CLI's contracts: --version, check-config's exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drwatch import __version__
from drwatch.cli import main

EXAMPLE = Path(__file__).parents[2] / "config" / "drwatch.example.toml"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`drwatch --version` prints the installed version."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"drwatch {__version__}"


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file exits 0 with a summary of what would be watched."""
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out
    assert "regions us-east-1, eu-west-1" in out
    assert "groups: 3" in out


def test_check_config_warns_about_a_database_group_without_a_role_source(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The example says where its database roles come from: no warning. Without
    roles_from, the db group is named in a warning, and the file is still valid."""
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "warning" not in capsys.readouterr().out
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE.read_text().replace('roles_from = "postgres_check"\n', ""))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: groups[" in out
    assert "(db): database roles come from neither a postgres check nor role tags" in out


def test_check_config_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three different mistakes: exit 2, all three named by dotted path."""
    path = tmp_path / "c.toml"
    path.write_text(
        "[watcher]\nlisten = 'nohost'\n"
        "[provider]\nregions = ['us-east-1']\nbogus = 1\n"
        "[agent]\nsecret_file = '/x'\n"
        "[[groups]]\nname = 'app'\nrole = 'app_server'\nselect = {}\n"
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "watcher.listen" in err
    assert "provider.bogus: unknown key" in err
    assert "groups[0].select" in err


def test_check_config_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not TOML exits 2 and names the line."""
    path = tmp_path / "c.toml"
    path.write_text("[provider\nregions = 1\n")
    assert main(["check-config", str(path)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon refuses to start on a bad config, with check-config's messages."""
    path = tmp_path / "c.toml"
    path.write_text("[watcher]\nname = 'x'\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "provider: required key is missing" in capsys.readouterr().err


def test_console_script_help() -> None:
    """The installed entry point runs and explains itself."""
    out = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "check-config" in out
    assert "run" in out


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        (b"[policy]\ncooldown = nan\n", "policy.cooldown"),
        (b"[watcher]\nname = '\xff'\n", "not UTF-8: byte 0xff at line 2, column 9"),
    ],
)
def test_check_config_bad_input_exits_2_without_traceback(
    tmp_path: Path, content: bytes, wanted: str
) -> None:
    """As a user runs it: exit 2, the position or path in the message, no traceback."""
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert wanted in proc.stderr
    assert "Traceback" not in proc.stderr
