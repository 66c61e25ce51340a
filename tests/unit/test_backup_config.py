"""The `[backup]` section: what check-config accepts and what it refuses, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drwatch import config as config_mod
from drwatch.backup.config import BackupKind
from drwatch.errors import ConfigError

FPR = "8F24F1BAB11D572A8812704C06D538C6C2D41FD2"


def base(tmp_path: Path, **backup: Any) -> dict[str, Any]:
    creds = tmp_path / "offsite.toml"
    if not creds.exists():
        creds.write_text('access_key_id = "k"\nsecret_access_key = "s"\n')
        creds.chmod(0o600)
    section: dict[str, Any] = {
        "recipient": {"public_key_file": str(tmp_path / "backup.pub.gpg"), "fingerprint": FPR},
        "custody": ["the CTO's safe", "the watcher host"],
        "locations": {
            "primary": {"bucket": "acme-backups", "region": "us-east-1"},
            "standby_region": {"bucket": "acme-backups-west", "region": "us-west-2"},
            "offsite": {
                "bucket": "acme-offsite",
                "region": "eu-central-1",
                "endpoint": "https://s3.other.example",
                "credentials_file": str(creds),
                "retention": {"keep": 30, "max_age": "90d"},
            },
        },
        "classes": {
            "orders": {"kind": "persistent", "groups": ["db"], "dump_every": "10m"},
            "app-config": {"kind": "configuration", "groups": ["app"], "paths": ["/etc/app"]},
            "scratch": {"kind": "transient"},
        },
    }
    section.update(backup)
    return {
        "objectives": {"rpo": "15m", "data_classes": {"orders": {"rpo": "10m", "rto": "5m"}}},
        "provider": {"regions": ["us-east-1", "us-west-2"]},
        "agent": {"secret_file": "/etc/drwatch/agent.secret"},
        "groups": [
            {"name": "app", "role": "app_server", "select": {"tags": {"role": "app"}}},
            {"name": "db", "role": "database", "select": {"tags": {"role": "db"}}},
        ],
        "backup": section,
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config_mod.parse(data)
    return err.value.problems


def test_a_full_backup_section_loads(tmp_path: Path) -> None:
    """The classes take their RPO from [objectives], and their intervals from it."""
    cfg = config_mod.parse(base(tmp_path))
    assert cfg.backup is not None
    orders = cfg.backup.classes["orders"]
    assert orders.intervals(600.0) == {
        BackupKind.VOLUME_SNAPSHOT: 300.0,
        BackupKind.DUMP: 600.0,
    }
    assert cfg.backup.recipient is not None
    assert cfg.backup.recipient.fingerprint == FPR
    assert cfg.backup.compression == "none"
    assert set(cfg.backup.locations.configured()) == {"primary", "standby_region", "offsite"}


def test_no_backup_section_is_no_backups(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["backup"]
    assert config_mod.parse(data).backup is None


def test_a_persistent_class_needs_offsite_and_a_recipient(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["backup"]["locations"]["offsite"]
    del data["backup"]["recipient"]
    found = problems(data)
    assert "backup.classes.orders: a persistent class needs backup.locations.offsite" in found
    assert any("orders: a persistent class needs backup.recipient" in p for p in found)
    assert any("app-config: a configuration class needs backup.recipient" in p for p in found)


def test_a_schedule_looser_than_the_rpo_is_refused(tmp_path: Path) -> None:
    """orders' RPO is 10m (its own objective): a 20m dump interval already breaches it."""
    data = base(tmp_path)
    data["backup"]["classes"]["orders"]["dump_every"] = "20m"
    data["backup"]["classes"]["app-config"]["archive_every"] = "1h"
    found = problems(data)
    assert (
        "backup.classes.orders.dump_every (20m) is looser than the class's rpo (10m): "
        "a backup that old already breaches it"
    ) in found
    assert any(
        "app-config.archive_every (1h) is looser than the class's rpo (15m)" in p for p in found
    )


def test_a_readable_private_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "watcher.key"
    key.write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\n")
    key.chmod(0o644)
    found = problems(base(tmp_path, watcher_private_key_file=str(key)))
    assert found == [
        f"backup.watcher_private_key_file: {key}: private key file is readable by group or "
        "others (mode 644); chmod 600 it"
    ]
    key.chmod(0o600)
    cfg = config_mod.parse(base(tmp_path, watcher_private_key_file=str(key)))
    assert cfg.backup is not None
    assert cfg.backup.watcher_private_key_file == key


def test_offsite_needs_its_own_endpoint_and_credentials(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["backup"]["locations"]["offsite"]["endpoint"]
    assert any("offsite.endpoint is required" in p for p in problems(data))
    data = base(tmp_path)
    del data["backup"]["locations"]["offsite"]["credentials_file"]
    assert any("offsite.credentials_file is required" in p for p in problems(data))


def test_unknown_groups_and_bad_fingerprints_are_named(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["backup"]["classes"]["orders"]["groups"] = ["database"]
    found = problems(data)
    assert found == ["backup.classes.orders.groups: 'database' is not a configured group"]
    data = base(tmp_path)
    data["backup"]["recipient"]["fingerprint"] = "1234"
    found = problems(data)
    assert any(
        p.startswith("backup.recipient.fingerprint: '1234' is not an OpenPGP") for p in found
    )


def test_fingerprints_are_accepted_with_spaces_and_lower_case(tmp_path: Path) -> None:
    spaced = " ".join(FPR[i : i + 4] for i in range(0, 40, 4)).lower()
    data = base(tmp_path)
    data["backup"]["recipient"]["fingerprint"] = spaced
    cfg = config_mod.parse(data)
    assert cfg.backup is not None
    assert cfg.backup.recipient is not None
    assert cfg.backup.recipient.fingerprint == FPR


def test_the_restore_test_schedule_is_checked(tmp_path: Path) -> None:
    """Defaults: daily, overdue after three days, at the primary location."""
    cfg = config_mod.parse(base(tmp_path))
    assert cfg.backup is not None
    assert (cfg.backup.restore_test.every, cfg.backup.restore_test.max_age) == (86400.0, 259200.0)
    found = problems(base(tmp_path, restore_test={"every": "1d", "max_age": "1h"}))
    assert any("restore_test.max_age (1h) is shorter than restore_test.every (1d)" in p
               for p in found)  # fmt: skip
    data = base(tmp_path, restore_test={"location": "standby_region"})
    del data["backup"]["locations"]["standby_region"]
    assert "backup.restore_test.location: standby_region is not a configured location" in (
        problems(data)
    )


def test_backups_with_a_cluster_are_accepted(tmp_path: Path) -> None:
    """With several watchers backups follow the leader (drwatch.backup.cluster): the
    two sections together are a valid config."""
    data = base(tmp_path)
    data["cluster"] = {"name": "w1", "endpoints": ["10.0.0.1:2379"]}
    cfg = config_mod.parse(data)
    assert cfg.backup is not None
    assert cfg.cluster is not None
