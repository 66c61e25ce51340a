"""What the service reports from its catalogue alone: RPO across restarts, the API
document, and `drwatch backups` in words."""

from __future__ import annotations

from pathlib import Path

from drwatch.backup.catalogue import Entry, SqliteCatalogue
from drwatch.backup.config import BackupConfig
from drwatch.backup.model import State
from drwatch.backup.render import render_backups
from drwatch.backup.service import BackupService

T0 = 1_796_000_000.0
CFG = BackupConfig.model_validate(
    {
        "locations": {"primary": {"bucket": "b-primary", "region": "us-east-1"}},
        "classes": {
            "orders": {"kind": "persistent", "groups": ["db"]},
            "scratch": {"kind": "transient"},
        },
    }
)
RPO = {"orders": 600.0, "scratch": 600.0}


def test_a_restart_does_not_reset_the_rpo_clock(tmp_path: Path) -> None:
    """Runs failed an hour before this start and none ever verified: breached at once,
    not only after another RPO from the restart."""
    catalogue = SqliteCatalogue(tmp_path)
    catalogue.record(Entry("orders-1", "orders", "dump", "primary", T0 - 3600, State.FAILED, "x"))
    service = BackupService(CFG, RPO, catalogue, since=T0)
    assert [(d.finding.value, d.location) for d in service.findings(T0 + 1)] == [
        ("backup_rpo_breached", "primary")
    ]
    fresh = BackupService(CFG, RPO, SqliteCatalogue(tmp_path / "empty"), since=T0)
    assert fresh.findings(T0 + 1) == []


def test_the_document_and_its_rendering_say_what_is_wrong(tmp_path: Path) -> None:
    catalogue = SqliteCatalogue(tmp_path)
    catalogue.record(
        Entry("orders-1", "orders", "dump", "primary", T0, State.VERIFIED, size=3 * 2**20)
    )
    catalogue.record(
        Entry(
            "orders-2",
            "orders",
            "dump",
            "primary",
            T0 + 300,
            State.CORRUPT,
            "chunk-00000.gpg: SHA-256 differs from the manifest",
        )
    )
    doc = BackupService(CFG, RPO, catalogue, since=T0).doc(T0 + 900)

    orders = doc["classes"][0]
    assert orders["locations"][0]["newest_verified"] == "orders-1"
    assert orders["locations"][0]["age_s"] == 900.0
    assert [f["message"] for f in doc["findings"]] == [
        "orders at primary: newest verified 15m old, RPO 10m"
    ]
    text = render_backups(doc).splitlines()
    assert text[:3] == [
        "orders (persistent, RPO 10m)",
        "  primary         verified 15m ago             RPO BREACHED",
        "scratch (transient): not backed up, on purpose",
    ]
    assert (
        "  2026-11-30 00:58:20Z orders dump primary: corrupt 0.0 MiB"
        "  (chunk-00000.gpg: SHA-256 differs from the manifest)"
    ) in text
