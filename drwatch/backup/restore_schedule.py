"""The scheduled restore test: when the watcher holds the private key, the proof that the
data restores is taken on a schedule and recorded.

Each run takes, for every persistent class, the newest dump the catalogue has verified at
`restore_test.location`, and restores it as `drwatch backup restore-test` does (verify,
decrypt in memory, `pg_restore` into a scratch PostgreSQL). Every result, pass or
failure with the reason, is a row of `restore_tests` in the catalogue's file, so a
restart keeps the record. `status(now)` is what the API, the status page and the plan
show (when data was last proven restorable); no pass within `max_age` (counted from the
start when none ever passed) is the finding `backup_restore_test_overdue`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from drwatch.backup.catalogue import FILENAME, Catalogue
from drwatch.backup.config import BackupConfig, BackupKind, ClassKind
from drwatch.backup.errors import BackupError
from drwatch.backup.manifest import Manifest
from drwatch.backup.model import State
from drwatch.backup.restore_test import RestoreReport, restore_manifest
from drwatch.backup.rpo import BackupFinding, Diagnosis
from drwatch.backup.runner import Place
from drwatch.units import format_duration

SCHEMA = """
CREATE TABLE IF NOT EXISTS restore_tests (
    at REAL NOT NULL,
    data_class TEXT NOT NULL,
    location TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    passed INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    restore_s REAL NOT NULL,
    data_age_s REAL NOT NULL,
    why TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS restore_tests_at ON restore_tests (passed, at);
"""
_COLUMNS = "at, data_class, location, backup_id, passed, rows, restore_s, data_age_s, why"

# Restores one manifest's dump from a place (drwatch.backup.restore_test.restore_manifest).
Restorer = Callable[[Place, Manifest], Awaitable[RestoreReport]]


@dataclass(frozen=True)
class RestoreResult:
    at: float
    data_class: str
    location: str
    backup_id: str
    passed: bool
    rows: int = 0
    restore_s: float = 0.0
    data_age_s: float = 0.0
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RestoreTestLog:
    """`restore_tests` in `state_dir/backups.sqlite3` (WAL, synchronous=FULL)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_dir / FILENAME, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record(self, r: RestoreResult) -> None:
        self._db.execute(
            f"INSERT INTO restore_tests ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                r.at,
                r.data_class,
                r.location,
                r.backup_id,
                int(r.passed),
                r.rows,
                r.restore_s,
                r.data_age_s,
                r.why,
            ),
        )

    def last(
        self, *, passed: bool | None = None, data_class: str | None = None
    ) -> RestoreResult | None:
        """The newest result (that passed, or failed; of one class), or None."""
        terms: list[tuple[str, int | str]] = []
        terms += [("passed = ?", int(passed))] if passed is not None else []
        terms += [("data_class = ?", data_class)] if data_class is not None else []
        where = "WHERE " + " AND ".join(t for t, _ in terms) if terms else ""
        args = tuple(a for _, a in terms)
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM restore_tests {where} ORDER BY at DESC LIMIT 1",  # noqa: S608
            args,
        ).fetchone()
        if row is None:
            return None
        return RestoreResult(
            float(row[0]), str(row[1]), str(row[2]), str(row[3]), bool(row[4]), int(row[5]),
            float(row[6]), float(row[7]), str(row[8]),
        )  # fmt: skip


class ScheduledRestoreTest:
    """Runs the restore test of every persistent class and keeps the record."""

    def __init__(
        self,
        cfg: BackupConfig,
        catalogue: Catalogue,
        log: RestoreTestLog,
        place: Place | None,
        restorer: Restorer,
        *,
        since: float,
    ) -> None:
        self._cfg = cfg
        self._catalogue = catalogue
        self._log = log
        self._place = place
        self._restorer = restorer
        self._since = since

    @property
    def enabled(self) -> bool:
        return (
            self._cfg.watcher_private_key_file is not None
            and self._cfg.restore_test.enabled
            and self._place is not None
        )

    def _classes(self) -> list[str]:
        return [n for n, dc in self._cfg.classes.items() if dc.kind is ClassKind.PERSISTENT]

    def _newest_dump(self, data_class: str) -> Manifest | None:
        location = self._cfg.restore_test.location.value
        for e in self._catalogue.entries(data_class):
            verified = e.state is State.VERIFIED and e.manifest is not None
            if verified and e.kind == BackupKind.DUMP.value and e.location == location:
                return e.manifest
        return None

    async def run(self, now: Callable[[], float]) -> list[RestoreResult]:
        """One round: a result per class with a verified dump (none yet: nothing to test)."""
        if not self.enabled or self._place is None:
            return []
        results = []
        for data_class in self._classes():
            manifest = self._newest_dump(data_class)
            if manifest is not None:
                results.append(await self._one(self._place, manifest, now))
        return results

    async def _one(
        self, place: Place, manifest: Manifest, now: Callable[[], float]
    ) -> RestoreResult:
        location = self._cfg.restore_test.location.value
        try:
            report = await self._restorer(place, manifest)
        except BackupError as err:
            result = RestoreResult(
                now(), manifest.data_class, location, manifest.backup_id, False, why=str(err)
            )
            structlog.get_logger("drwatch.backup").error(
                "restore_test.failed", backup=manifest.backup_id, error=str(err)
            )
        else:
            result = RestoreResult(
                now(), manifest.data_class, location, report.backup_id, True, report.rows,
                report.restore_s, report.data_age_s,
            )  # fmt: skip
            structlog.get_logger("drwatch.backup").info(
                "restore_test.passed", backup=report.backup_id, rows=report.rows
            )
        self._log.record(result)
        return result

    def last_ok(self) -> dict[str, float]:
        """Per persistent class: its last pass, or the start while none has passed."""
        found = {c: self._log.last(passed=True, data_class=c) for c in self._classes()}
        return {c: r.at if r else self._since for c, r in found.items()}

    def overdue(self, now: float) -> bool:
        last = self._log.last(passed=True)
        since = last.at if last is not None else self._since
        return self.enabled and now - since > self._cfg.restore_test.max_age

    def status(self, now: float) -> dict[str, Any]:
        """`restore_test` in GET /api/v1/backups."""
        last_passed = self._log.last(passed=True)
        last = self._log.last()
        return {
            "enabled": self.enabled,
            "why_not": "" if self.enabled else self._why_not(),
            "every_s": self._cfg.restore_test.every,
            "max_age_s": self._cfg.restore_test.max_age,
            "location": self._cfg.restore_test.location.value,
            "last": last.to_dict() if last else None,
            "last_passed": last_passed.to_dict() if last_passed else None,
            "overdue": self.overdue(now),
        }

    def _why_not(self) -> str:
        if self._cfg.watcher_private_key_file is None:
            return (
                "the watcher holds no private key: run `drwatch backup restore-test --key "
                "FILE` where a copy is kept"
            )
        return "backup.restore_test.enabled is false"

    def findings(self, now: float) -> list[Diagnosis]:
        if not self.overdue(now):
            return []
        last = self._log.last(passed=True)
        max_age = format_duration(self._cfg.restore_test.max_age)
        when = f"the last passed {format_duration(round(now - last.at))} ago" if last else (
            "none has passed since drwatch started"
        )  # fmt: skip
        failed = self._log.last()
        tail = f"; the last failed: {failed.why}" if failed and not failed.passed else ""
        return [
            Diagnosis(
                BackupFinding.RESTORE_TEST_OVERDUE,
                "all",
                self._cfg.restore_test.location.value,
                now - last.at if last else None,
                f"no restore test passed within {max_age}: {when}{tail}",
            )
        ]


def manifest_restorer(cfg: BackupConfig) -> Restorer:
    """The real restorer: the watcher's key, scratch PostgreSQL from restore_test.pg_bin."""

    async def restore(place: Place, manifest: Manifest) -> RestoreReport:
        key = cfg.watcher_private_key_file
        if key is None:
            raise BackupError("the watcher holds no private key")
        return await restore_manifest(
            cfg.gpg_binary, place.store, place.root, manifest, Path(key), cfg.restore_test.pg_bin
        )

    return restore
