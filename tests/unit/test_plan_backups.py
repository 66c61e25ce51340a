"""`drwatch plan`: the data and key-custody sections, from `[backup]` and GET /api/v1/backups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drwatch import config as config_mod
from drwatch.plan.build import Drills, Live, build_plan
from drwatch.plan.render import markdown
from tests.unit.test_backup_config import FPR, base

NOW = 1_790_000_000.0


def cfg(tmp_path: Path, **backup: Any) -> config_mod.Config:
    return config_mod.parse(base(tmp_path, **backup))


def backups_doc(**changes: Any) -> dict[str, Any]:
    """What GET /api/v1/backups says: orders verified 4 minutes ago at primary, never
    off-site (a breach), and the scheduled restore test's record."""
    doc: dict[str, Any] = {
        "recipient_fingerprint": FPR,
        "classes": [
            {
                "data_class": "orders",
                "backed_up": True,
                "locations": [
                    {"location": "primary", "newest_verified_at": NOW - 240},
                    {"location": "offsite", "newest_verified_at": None},
                ],
            },
            {"data_class": "scratch", "backed_up": False, "locations": []},
        ],
        "findings": [
            {
                "finding": "backup_rpo_breached",
                "message": "orders at offsite: no verified backup, RPO 10m",
            }
        ],
        "restore_test": {"enabled": False},
    }
    doc.update(changes)
    return doc


def test_data_section_lists_each_class_with_its_rpo_and_newest_verified_backup(
    tmp_path: Path,
) -> None:
    live = Live(status={"summary": "ok"}, api="http://x", backups=backups_doc())
    plan = build_plan(cfg(tmp_path), live, Drills(), NOW)
    text = markdown(plan)
    assert "| orders | persistent | db |" in text
    assert "| 10m | primary: 4m old; offsite: none verified |" in text
    assert "| scratch | transient | - | deliberately not backed up |" in text
    assert "not backed up (on purpose)" in text
    # The daemon's breach is a part of the plan that is not met.
    assert ("Data classes and backups", "orders at offsite: no verified backup, RPO 10m") in (
        plan.unmet
    )
    assert "backups feature is being built" not in text


def test_without_live_state_the_newest_backups_are_missing_with_the_reason(
    tmp_path: Path,
) -> None:
    plan = build_plan(cfg(tmp_path), Live(), Drills(), NOW)
    missing = [t for s, t in plan.notes("missing") if s == "Data classes and backups"]
    assert missing == [
        "Verified backups and restore tests need the live state: no --api URL was given."
    ]
    live = Live(status={"summary": "ok"}, api="http://x", backups_error="the daemon takes none")
    plan = build_plan(cfg(tmp_path), live, Drills(), NOW)
    assert "need the live state: the daemon takes none." in markdown(plan)


def test_restore_proof_is_ok_when_recent_and_unmet_when_overdue_or_never(
    tmp_path: Path,
) -> None:
    last = {"at": NOW - 3600, "backup_id": "orders-1", "rows": 1200, "restore_s": 3.5,
            "data_age_s": 95.0}  # fmt: skip
    for test, kind in (
        ({"enabled": True, "last_passed": last, "overdue": False}, "ok"),
        ({"enabled": True, "last_passed": last, "overdue": True}, "unmet"),
        ({"enabled": True, "last_passed": None, "overdue": True}, "unmet"),
        ({"enabled": False}, "missing"),
    ):
        live = Live(status={}, api="http://x", backups=backups_doc(restore_test=test, findings=[]))
        notes = build_plan(cfg(tmp_path), live, Drills(), NOW).notes(kind)
        texts = " ".join(t for s, t in notes if s == "Data classes and backups")
        assert "restor" in texts, (test, notes)
    ok = build_plan(
        cfg(tmp_path),
        Live(status={}, api="http://x", backups=backups_doc(
            restore_test={"enabled": True, "last_passed": last, "overdue": False}, findings=[])),
        Drills(), NOW,
    )  # fmt: skip
    assert "orders-1 restored 1200 rows in 3.5 s, data 95 s old" in markdown(ok)


def test_no_backup_section_says_so_instead_of_being_built(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["backup"]
    plan = build_plan(config_mod.parse(data), Live(), Drills(), NOW)
    missing = " ".join(t for _, t in plan.notes("missing"))
    assert "No [backup] section is configured" in missing
    assert "No backup recipient is configured" in missing
    assert "backups feature is being built" not in markdown(plan)


def test_key_custody_prints_fingerprint_copies_and_the_watchers_copy(tmp_path: Path) -> None:
    text = markdown(build_plan(cfg(tmp_path), Live(), Drills(), NOW))
    assert "8F24 F1BA B11D 572A 8812 704C 06D5 38C6 C2D4 1FD2" in text
    assert "- the CTO's safe\n- the watcher host" in text
    assert "The watcher holds no copy" in text
    key = tmp_path / "watcher.key"
    key.write_text("secret")
    key.chmod(0o600)
    text = markdown(
        build_plan(cfg(tmp_path, watcher_private_key_file=str(key)), Live(), Drills(), NOW)
    )
    assert "The watcher holds one copy" in text


def test_no_custody_and_a_daemon_on_another_key_are_unmet(tmp_path: Path) -> None:
    other = "0" * 40
    live = Live(status={}, api="http://x", backups=backups_doc(recipient_fingerprint=other))
    plan = build_plan(cfg(tmp_path, custody=[]), live, Drills(), NOW)
    unmet = [t for s, t in plan.unmet if s == "Key custody"]
    assert unmet[0].startswith("No custody is recorded")
    assert unmet[1].startswith("The running daemon encrypts to another key: 0000 0000")
