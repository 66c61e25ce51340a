"""Pure parts of the daemon's backup wiring: retention per host, which backups are
re-verified, the backup findings' alerts, and the drill's `[[expect_backup]]` verdict."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drwatch.backup.alerting import backup_alerts
from drwatch.backup.catalogue import Entry
from drwatch.backup.config import Retention
from drwatch.backup.manifest import Manifest
from drwatch.backup.model import State
from drwatch.backup.retention import to_prune
from drwatch.backup.rpo import BackupFinding, Diagnosis
from drwatch.backup.runner import _due
from drwatch.sandbox.backup_verdict import (
    BackupSighting,
    ExpectBackup,
    judge_backup,
    reference_s,
)

T0 = 1_796_000_000.0


def archive(n: int, host: str, at: float) -> Entry:
    manifest = Manifest(f"app-config-{n}", "app-config", "config_archive", at, "", (), "none",
                        (), 0, source={"host": host})  # fmt: skip
    return Entry(f"app-config-{n}", "app-config", "config_archive", "primary", at,
                 State.VERIFIED, manifest=manifest)  # fmt: skip


def test_retention_keeps_each_hosts_archives_on_their_own() -> None:
    """One run archives every host: keep = 2 keeps two per host, not two in all."""
    entries = [archive(i * 10 + h, f"app-{h}", T0 + i) for i in range(3) for h in range(4)]
    doomed = to_prune(entries, {"primary": Retention(keep=2)}, T0 + 10)
    assert sorted(e.backup_id for e in doomed) == [f"app-config-{h}" for h in range(4)]


def dump(n: int, at: float, checked: float) -> Entry:
    return Entry(f"orders-{n}", "orders", "dump", "primary", at, State.VERIFIED,
                 checked_at=checked)  # fmt: skip


def test_reverification_covers_every_verified_backup_younger_than_the_rpo() -> None:
    """The newest is due; so is an older one still within the RPO (the RPO falls back on
    it); one older than the RPO waits until it is the newest."""
    entries = [dump(3, T0 - 10, T0 - 100), dump(2, T0 - 70, T0 - 100), dump(1, T0 - 500, T0 - 100)]
    due = _due(entries, older_than=T0 - 30, recent={"orders": 180.0}, now=T0)
    assert [e.backup_id for e in due] == ["orders-3", "orders-2"]
    assert [e.backup_id for e in _due(entries, T0 - 30, {}, T0)] == ["orders-3"]


def test_backup_findings_become_alerts_stable_from_tick_to_tick() -> None:
    d = Diagnosis(BackupFinding.RPO_BREACHED, "orders", "offsite", 400.0, "orders at offsite: ...")
    (first,) = backup_alerts([d], T0)
    (again,) = backup_alerts([Diagnosis(d.finding, "orders", "offsite", 401.0, d.message)], T0 + 1)
    assert first.alertname == "DrwatchBackupRpoBreached"
    assert first.severity == "critical"
    assert first.key == again.key
    assert first.started_at == again.started_at == T0 - 400.0
    (failing,) = backup_alerts(
        [Diagnosis(BackupFinding.FAILING, "orders", "primary", None, "x")], T0
    )
    assert (failing.alertname, failing.severity, failing.started_at) == (
        "DrwatchBackupFailing",
        "warning",
        T0,
    )


def seen(backup_id: str, state: str, at_s: float, location: str = "offsite") -> BackupSighting:
    return BackupSighting(backup_id, "orders", "dump", location, state, T0 + at_s)


EXPECT = ExpectBackup(data_class="orders", kind="dump", location="offsite", state="verified",
                      within=60.0)  # fmt: skip


@pytest.mark.parametrize(
    ("sightings", "met", "said"),
    [
        ([seen("old", "verified", 5.0)], False, "never seen after 75.0s (seen: verified)"),
        ([seen("old", "verified", 5.0), seen("new", "verified", 100.0)], True, "new verified"),
        ([seen("new", "verified", 150.0)], False, "(within 60s)"),
        ([seen("new", "verified", 90.0, location="primary")], False, "seen: nothing"),
    ],
    ids=["before-the-heal", "after-the-heal", "too-late", "other-location"],
)
def test_expect_backup_counts_only_what_appears_after_the_reference(
    sightings: list[BackupSighting], met: bool, said: str
) -> None:
    """The reference is the timeline's last event (here the heal at 75 s): a backup
    verified before it does not count; one verified after it does, within `within`."""
    events = [SimpleNamespace(at_s=15.0, error=""), SimpleNamespace(at_s=75.0, error="")]
    ref = reference_s(events, healthy_at_s=10.0)
    verdict = judge_backup(EXPECT, sightings, T0, ref)
    assert verdict["met"] is met
    assert said in verdict["reason"]


def test_without_events_the_reference_is_the_healthy_moment() -> None:
    assert reference_s([], healthy_at_s=12.5) == 12.5
    assert reference_s([SimpleNamespace(at_s=40.0, error="refused")], healthy_at_s=12.5) == 12.5
