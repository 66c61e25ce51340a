"""The agent's own config: validated whole, every problem with its dotted path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import structlog

from drwatch.agent import config as agent_config
from drwatch.agent.server import create_app, read_instance_id
from drwatch.agent.wire import derive_host_secret
from drwatch.cli import main
from drwatch.errors import ConfigError
from tests.support.services import free_port

EXAMPLE = Path(__file__).parents[2] / "config" / "agent.example.toml"


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        agent_config.parse(data)
    return caught.value.problems


def test_example_config_is_valid_and_covers_every_check_kind() -> None:
    """config/agent.example.toml loads, and shows one check of each kind."""
    cfg = agent_config.load(EXAMPLE)
    assert {c.kind for c in cfg.checks} == agent_config.CHECK_KINDS
    assert cfg.listen == "127.0.0.1:9180"


def test_commented_actions_in_the_example_are_valid_too() -> None:
    """The example's commented-out actions are valid when uncommented."""
    text = EXAMPLE.read_text().replace("# [[actions]]", "[[actions]]")
    lines = [
        line.removeprefix("# ")
        if line.startswith(("# name", "# argv", "# params", "# timeout"))
        else line
        for line in text.splitlines()
    ]
    cfg = agent_config.parse(tomllib.loads("\n".join(lines)))
    assert [a.name for a in cfg.actions] == ["register_backend", "set_database"]


def test_defaults_listen_on_loopback_only() -> None:
    """With only a secret file, the agent listens on 127.0.0.1:9180."""
    cfg = agent_config.parse({"secret_file": "/etc/drwatch/agent.secret", "instance_id": "i-1"})
    assert cfg.host_port == ("127.0.0.1", 9180)
    assert cfg.max_request_bytes == 64 * 1024


def test_every_problem_is_listed_with_its_dotted_path() -> None:
    """Several mistakes at once come back together, each with the path the operator wrote."""
    problems = problems_of(
        {
            "listen": "nowhere",
            "colour": "blue",
            "checks": [
                {"kind": "http", "name": "app"},
                {"kind": "smtp", "name": "mail"},
                {"kind": "tcp", "name": "db", "address": "127.0.0.1:5432", "port": 1},
                {"kind": "disk_free", "name": "d", "path": "/", "critical_free_percent": 30},
            ],
            "actions": [{"name": "x", "argv": ["rm"]}],
        }
    )
    assert problems == [
        "listen: 'nowhere' is not host:port (e.g. '127.0.0.1:9480' or '[::1]:9480')",
        "secret_file: required key is missing",
        "checks[0].url: required key is missing",
        "checks[1]: kind must be one of disk_free, http, postgres, process, tcp",
        "checks[2].port: unknown key",
        "checks[3]: critical_free_percent must not be above warning_free_percent",
        "actions[0]: argv[0] must be an absolute path (got 'rm')",
        "colour: unknown key",
    ]


def test_duplicate_names_and_bad_skew_are_refused() -> None:
    """Check names are unique, and the clock window stays between 1s and 5m."""
    tcp = {"kind": "tcp", "name": "db", "address": "127.0.0.1:5432"}
    problems = problems_of(
        {"secret_file": "/s", "instance_id": "i-1", "max_clock_skew": "10m", "checks": [tcp, tcp]}
    )
    assert problems == [
        "(top level): max_clock_skew (10m) must be between 1s and 5m",
        "checks: the name 'db' is used more than once",
    ]


def write_secret(path: Path, mode: int) -> Path:
    path.write_bytes(b"s3cr3t-0123456789abcdef\n")
    path.chmod(mode)
    return path


def test_world_readable_secret_is_refused(tmp_path: Path) -> None:
    """The agent will not start with a secret file that group or others can read."""
    secret = write_secret(tmp_path / "agent.secret", 0o644)
    cfg = agent_config.parse({"secret_file": str(secret), "instance_id": "i-1"})
    with pytest.raises(ConfigError, match="readable by group or others"):
        create_app(cfg, host=None, checks={}, actions={})  # type: ignore[arg-type]


def test_private_secret_is_accepted(tmp_path: Path) -> None:
    """A chmod 600 secret file is read and the app is built."""
    secret = write_secret(tmp_path / "agent.secret", 0o600)
    cfg = agent_config.parse({"secret_file": str(secret), "instance_id": "i-1"})
    app = create_app(cfg, host=None, checks={}, actions={})  # type: ignore[arg-type]
    assert {r.method for r in app.router.routes()} >= {"GET", "POST"}


def test_cli_exits_2_and_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`drwatch agent --config BAD` exits 2 and prints each problem."""
    bad = tmp_path / "agent.toml"
    bad.write_text('listen = "x"\n')
    assert main(["agent", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "secret_file: required key is missing" in err


def test_cli_exits_2_on_a_world_readable_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`drwatch agent` refuses a world-readable secret before listening, with exit 2."""
    secret = write_secret(tmp_path / "agent.secret", 0o604)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'secret_file = "{secret}"\ninstance_id = "i-1"\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    saved = structlog.get_config()
    try:
        assert main(["agent", "--config", str(cfg)]) == 2
    finally:
        # The command configured logging onto captured stderr; loggers bound at import
        # hold the old processor list, so put back that very list.
        structlog.configure(**saved)
    assert "chmod 600" in capsys.readouterr().err


def test_the_agent_must_know_its_instance_id() -> None:
    """Neither or both of instance_id and instance_id_file is refused, saying why."""
    for extra in ({}, {"instance_id": "i-1", "instance_id_file": "/x"}):
        problems = problems_of({"secret_file": "/s", **extra})
        assert len(problems) == 1
        assert "set exactly one of instance_id and instance_id_file" in problems[0]
    assert problems_of({"secret_file": "/s", "instance_id": "i 1\nx"})[0].startswith(
        "instance_id: 'i 1\\nx' is not an instance id"
    )


def test_instance_id_file_is_read_at_start(tmp_path: Path) -> None:
    """cloud-init's instance-id file names the agent; a file that is not an id is refused."""
    secret = write_secret(tmp_path / "agent.secret", 0o600)
    id_file = tmp_path / "instance-id"
    id_file.write_text("i-0abc123\n")
    cfg = agent_config.parse({"secret_file": str(secret), "instance_id_file": str(id_file)})
    assert read_instance_id(cfg) == "i-0abc123"
    id_file.write_text("<html>not an id</html>")
    with pytest.raises(ConfigError, match="is not an instance id"):
        read_instance_id(cfg)
    id_file.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        create_app(cfg, host=None, checks={}, actions={})  # type: ignore[arg-type]


def test_agent_secret_prints_the_derived_host_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`drwatch agent-secret` prints exactly what the watcher derives for that instance."""
    master = write_secret(tmp_path / "master.secret", 0o600)
    assert main(["agent-secret", "--master-file", str(master), "--instance-id", "i-1"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.encode() == derive_host_secret(master.read_bytes().strip(), "i-1")
    assert main(["agent-secret", "--master-file", str(master), "--instance-id", "a b"]) == 2
