"""The agent's `[backup]`: where this host uploads, to whom it encrypts, what it backs
up; the built action takes only the kinds the section allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drwatch.agent import config as agent_config
from drwatch.agent.actions import ActionError
from drwatch.agent.backup import build_backup_action
from drwatch.errors import ConfigError

FPR = "8F24F1BAB11D572A8812704C06D538C6C2D41FD2"


def section(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    creds = tmp_path / "host.credentials"
    creds.write_text('access_key_id = "w"\nsecret_access_key = "o"\n')
    creds.chmod(0o600)
    return {
        "location": {
            "bucket": "acme-backups",
            "region": "us-east-1",
            "credentials_file": str(creds),
        },
        "public_key_file": str(tmp_path / "backup.pub.gpg"),
        "fingerprint": FPR,
        **extra,
    }


def agent(tmp_path: Path, backup: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"secret_file": "/etc/drwatch/agent.secret", "instance_id": "i-1", "backup": backup,
            **extra}  # fmt: skip


def problems_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        agent_config.parse(data)
    return "\n".join(err.value.problems)


def test_a_database_host_dumps_and_an_app_host_archives(tmp_path: Path) -> None:
    db = agent_config.parse(
        agent(tmp_path, section(tmp_path, dump=True), postgres={"host": "127.0.0.1"})
    )
    assert db.backup is not None
    assert db.backup.dump
    app = agent_config.parse(agent(tmp_path, section(tmp_path, archive_paths=["/etc/app"])))
    assert app.backup is not None
    assert app.backup.archive_paths == ["/etc/app"]


def test_nonsense_is_refused_with_its_path(tmp_path: Path) -> None:
    said = problems_of(agent(tmp_path, section(tmp_path, dump=True)))
    assert "backup.dump needs a [postgres] section" in said
    said = problems_of(agent(tmp_path, section(tmp_path, archive_paths=["etc/app"])))
    assert "archive_paths must be absolute" in said
    said = problems_of(agent(tmp_path, section(tmp_path)))
    assert "nothing is backed up" in said
    said = problems_of(agent(tmp_path, section(tmp_path, dump=True, fingerprint="abc")))
    assert "fingerprint" in said


def test_a_private_key_in_the_backup_section_is_refused(tmp_path: Path) -> None:
    said = problems_of(
        agent(tmp_path, section(tmp_path, archive_paths=["/etc"], private_key_file="/k"))
    )
    assert "never holds a private key" in said


async def test_the_action_takes_only_the_kinds_the_section_allows(tmp_path: Path) -> None:
    cfg = agent_config.parse(agent(tmp_path, section(tmp_path, archive_paths=["/etc/app"])))
    assert cfg.backup is not None
    action = build_backup_action(cfg.backup, cfg.postgres)
    params = {"backup_id": "orders-1", "data_class": "orders", "kind": "dump", "created_at": "1"}
    with pytest.raises(ActionError, match="takes no dump backups"):
        await action(params)
