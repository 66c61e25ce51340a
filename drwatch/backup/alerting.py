"""Backup findings as alerts: `backup_rpo_breached` (critical) and `backup_failing`
(warning), one alert per data class and location, sent with the incidents' alerts."""

from __future__ import annotations

from collections.abc import Iterable

from drwatch.alerts.model import AlertInput
from drwatch.backup.rpo import BackupFinding, Diagnosis

_NAMES = {
    BackupFinding.RPO_BREACHED: ("DrwatchBackupRpoBreached", "critical"),
    BackupFinding.FAILING: ("DrwatchBackupFailing", "warning"),
    # The database ladder restored a verified backup and found it corrupt.
    BackupFinding.UNRESTORABLE: ("DrwatchBackupUnrestorable", "critical"),
    BackupFinding.RESTORE_TEST_OVERDUE: ("DrwatchRestoreTestOverdue", "warning"),
}


def backup_alerts(findings: Iterable[Diagnosis], now: float) -> list[AlertInput]:
    """One alert per finding; it starts at the newest verified backup's time (stable
    from tick to tick), or now when there is none."""
    out = []
    for d in findings:
        if d.finding not in _NAMES:
            continue  # a warning on the status only (image_copy_pending)
        name, severity = _NAMES[d.finding]
        out.append(
            AlertInput(
                incident_id=f"backup/{d.data_class}/{d.location}",
                alertname=name,
                severity=severity,
                scope="data",
                summary=d.message,
                started_at=now if d.age is None else now - d.age,
                description=(
                    f"Data class {d.data_class} at {d.location}: {d.finding.description}. "
                    "`drwatch backups` lists the catalogue and why each backup failed."
                ),
            )
        )
    return out
