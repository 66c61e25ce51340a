"""Backup series, registered into the daemon's registry (docs/metrics.md lists them).

Gauges are set from the service after each run and re-verification, never from a
collector (no I/O at scrape time). Label values are bounded: configured class names,
the four kinds, the three locations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from drwatch.backup.catalogue import Entry
from drwatch.backup.model import State

if TYPE_CHECKING:
    from drwatch.backup.restore_schedule import RestoreResult

_LABELS = ["data_class", "kind", "location"]


class BackupMetrics:
    """`registry=None`: a private registry (tests, or a service with no /metrics)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.last_verified = Gauge(
            "drwatch_backup_last_verified_timestamp_seconds",
            "When the data of the newest verified backup was taken, per class, kind and "
            "location (Unix time). The RPO alert compares its age with the class's RPO.",
            _LABELS,
            registry=r,
        )
        self.rpo = Gauge(
            "drwatch_backup_rpo_seconds",
            "Each backed-up data class's RPO (for the DrwatchBackupRpoBreached rule).",
            ["data_class"],
            registry=r,
        )
        self.size = Gauge(
            "drwatch_backup_size_bytes",
            "Size of the newest verified backup's ciphertext, per class, kind and location.",
            _LABELS,
            registry=r,
        )
        self.failures = Counter(
            "drwatch_backup_failures_total",
            "Backup runs or copies that failed, per class, kind and location.",
            _LABELS,
            registry=r,
        )
        self.duration = Histogram(
            "drwatch_backup_duration_seconds",
            "Wall time of a backup run (upload, verification and copies), per kind.",
            ["kind"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
            registry=r,
        )

        self.restore_ok = Gauge(
            "drwatch_backup_restore_test_last_success_timestamp_seconds",
            "When the scheduled restore test last restored the class's newest dump (Unix "
            "time; drwatch's start while none has passed since).",
            ["data_class"],
            registry=r,
        )
        self.restore_max_age = Gauge(
            "drwatch_backup_restore_test_max_age_seconds",
            "backup.restore_test.max_age: older than this, the restore test is overdue.",
            registry=r,
        )
        self.restore_failures = Counter(
            "drwatch_backup_restore_test_failures_total",
            "Scheduled restore tests that did not restore, per class.",
            ["data_class"],
            registry=r,
        )
        self.restore_seconds = Gauge(
            "drwatch_backup_restore_test_duration_seconds",
            "How long the last passing restore test took to restore (a measured RTO for data).",
            ["data_class"],
            registry=r,
        )

    def start_restore_tests(self, last_ok: Mapping[str, float], max_age: float) -> None:
        self.restore_max_age.set(max_age)
        for data_class, at in last_ok.items():
            self.restore_ok.labels(data_class).set(at)

    def record_restore_tests(self, results: Iterable[RestoreResult]) -> None:
        for r in results:
            if r.passed:
                self.restore_ok.labels(r.data_class).set(r.at)
                self.restore_seconds.labels(r.data_class).set(r.restore_s)
            else:
                self.restore_failures.labels(r.data_class).inc()

    def set_rpo(self, rpo_of: Mapping[str, float]) -> None:
        for data_class, seconds in rpo_of.items():
            self.rpo.labels(data_class).set(seconds)

    def record_run(self, entries: Iterable[Entry], seconds: float) -> None:
        kinds = set()
        for e in entries:
            kinds.add(e.kind)
            if e.state in (State.FAILED, State.CORRUPT, State.MISSING):
                self.failures.labels(e.data_class, e.kind, e.location).inc()
        for kind in kinds:
            self.duration.labels(kind).observe(seconds)

    def update(self, entries: Iterable[Entry]) -> None:
        """Set the gauges from the catalogue (newest verified per class, kind, location)."""
        newest: dict[tuple[str, str, str], Entry | None] = {}
        for e in entries:
            key = (e.data_class, e.kind, e.location)
            newest.setdefault(key, None)
            known = newest[key]
            if e.state is State.VERIFIED and (known is None or e.created_at > known.created_at):
                newest[key] = e
        for key, found in newest.items():
            # None verified (any more): 0, so the age is huge and the RPO alert fires.
            self.last_verified.labels(*key).set(found.created_at if found else 0)
            self.size.labels(*key).set(found.size if found else 0)
