"""The drill ledger: every drill drwatch ran or was told about, kept under the state dir.

A drill proves recovery only if someone can show it later: each sandbox drill, live
drill and restore test is one `DrillRecord` with its result, what it measured
(detection, recovery = the measured RTO, data loss = the measured RPO) and the
objectives in force when it ran, next to the full report. SQLite (WAL), like the
incident store, in its own file so the CLI can write while the daemon reads.

`drill_status()` is pure: from the newest passing drill of each required kind, when the
next one is due and whether it is overdue (`objectives.drill_interval`).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILENAME = "drills.sqlite3"
KINDS = ("sandbox", "live", "restore_test")

SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    scenario TEXT NOT NULL,
    started_at REAL NOT NULL,
    passed INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_started ON drills (started_at);
CREATE INDEX IF NOT EXISTS drills_kind ON drills (kind, passed, started_at);
"""


def new_drill_id(started_at: float) -> str:
    stamp = datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%S")
    return f"drill-{stamp}-{secrets.token_hex(2)}"


def _max(values: Iterable[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(nums) if nums else None


@dataclass(frozen=True, slots=True)
class DrillRecord:
    """One drill. Measured values are the worst seen in the drill (None: not measured);
    objectives are those in force when it ran (None: none applied)."""

    id: str
    kind: str
    scenario: str
    started_at: float
    ended_at: float
    passed: bool
    detection_s: float | None = None
    recovery_s: float | None = None
    data_loss_s: float | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    by: str = ""
    violations: tuple[str, ...] = ()
    report: Mapping[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "passed" if self.passed else "failed"

    @classmethod
    def from_report(
        cls, report: Mapping[str, Any], *, kind: str, started_at: float, by: str = ""
    ) -> DrillRecord:
        """A record from a drill report (DESIGN.md's report format)."""
        if kind not in KINDS:
            raise ValueError(f"unknown drill kind {kind!r} (known: {', '.join(KINDS)})")
        incidents = [i for i in report.get("incidents") or [] if isinstance(i, Mapping)]
        objectives = report.get("objectives") or {}
        data = report.get("data") if isinstance(report.get("data"), Mapping) else {}
        ended = report.get("ended_at_s")
        return cls(
            id=new_drill_id(started_at),
            kind=kind,
            scenario=str(report.get("scenario") or "?"),
            started_at=started_at,
            ended_at=started_at + (float(ended) if isinstance(ended, int | float) else 0.0),
            passed=bool(report.get("passed")),
            detection_s=_max(i.get("detection_s") for i in incidents),
            recovery_s=_max(i.get("recovery_s") for i in incidents),
            data_loss_s=_max([data.get("loss_window_s")]) if data else None,
            rto_s=_max([objectives.get("rto_s")]),
            rpo_s=_max([objectives.get("rpo_s")]),
            by=by,
            violations=tuple(str(v) for v in report.get("violations") or []),
            report=dict(report),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "scenario": self.scenario,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "passed": self.passed,
            "result": self.result,
            "detection_s": self.detection_s,
            "recovery_s": self.recovery_s,
            "data_loss_s": self.data_loss_s,
            "objectives": {"rto_s": self.rto_s, "rpo_s": self.rpo_s},
            "by": self.by,
            "violations": list(self.violations),
            "report": dict(self.report),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DrillRecord:
        objectives = d.get("objectives") or {}
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            scenario=str(d["scenario"]),
            # The API gives ISO text with an epoch `_ts` twin; the ledger stores epochs.
            started_at=float(d.get("started_at_ts", d["started_at"])),
            ended_at=float(d.get("ended_at_ts", d.get("ended_at") or d["started_at"])),
            passed=bool(d["passed"]),
            detection_s=d.get("detection_s"),
            recovery_s=d.get("recovery_s"),
            data_loss_s=d.get("data_loss_s"),
            rto_s=objectives.get("rto_s"),
            rpo_s=objectives.get("rpo_s"),
            by=str(d.get("by") or ""),
            violations=tuple(d.get("violations") or ()),
            report=dict(d.get("report") or {}),
        )


class DrillLedger:
    """The drills recorded under `state_dir`. Short synchronous calls."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DrillLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def record(self, rec: DrillRecord) -> None:
        self._db.execute(
            "INSERT INTO drills (id, kind, scenario, started_at, passed, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                rec.kind,
                rec.scenario,
                rec.started_at,
                int(rec.passed),
                json.dumps(rec.to_dict()),
            ),
        )

    def recent(self, limit: int = 100) -> list[DrillRecord]:
        """Newest first."""
        rows = self._db.execute(
            "SELECT body FROM drills ORDER BY started_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [DrillRecord.from_dict(json.loads(r[0])) for r in rows]

    def get(self, drill_id: str) -> DrillRecord | None:
        row = self._db.execute("SELECT body FROM drills WHERE id = ?", (drill_id,)).fetchone()
        return DrillRecord.from_dict(json.loads(row[0])) if row else None

    def latest(self) -> dict[tuple[str, str], float]:
        """(kind, result) -> the newest such drill's start (epoch seconds)."""
        rows = self._db.execute(
            "SELECT kind, passed, MAX(started_at) FROM drills GROUP BY kind, passed"
        )
        return {(str(k), "passed" if p else "failed"): float(t) for k, p, t in rows}


def record_report(
    state_dir: Path, report: Mapping[str, Any], kind: str, by: str = "", now: float | None = None
) -> DrillRecord:
    """Write one drill report into the ledger under `state_dir`; the record it became.
    The report's `started_at` (epoch) dates it; without one, `now`."""
    started = report.get("started_at")
    if isinstance(started, int | float) and not isinstance(started, bool):
        started_at = float(started)
    else:
        started_at = now if now is not None else datetime.now(UTC).timestamp()
    rec = DrillRecord.from_report(report, kind=kind, started_at=started_at, by=by)
    with DrillLedger(state_dir) as ledger:
        ledger.record(rec)
    return rec


@dataclass(frozen=True, slots=True)
class DrillDue:
    """A required drill kind: its newest passing drill, when the next is due, overdue?"""

    kind: str
    last_passed_at: float | None
    due_at: float | None
    overdue: bool

    def describe(self, now: float) -> str:
        if self.last_passed_at is None:
            return f"{self.kind}: no passing drill recorded: overdue"
        days = (now - self.last_passed_at) / 86400
        when = _day(self.due_at)
        if self.overdue:
            return f"{self.kind}: last passed {days:.0f} days ago: overdue since {when}"
        return f"{self.kind}: last passed {days:.0f} days ago; next due by {when}"


def _day(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def drill_status(
    latest: Mapping[tuple[str, str], float],
    kinds: Iterable[str],
    interval_s: float,
    now: float,
) -> tuple[DrillDue, ...]:
    """Per required kind: due `interval_s` after its newest passing drill; overdue after."""
    out = []
    for kind in kinds:
        last = latest.get((kind, "passed"))
        due = None if last is None else last + interval_s
        out.append(DrillDue(kind, last, due, overdue=due is None or now > due))
    return tuple(out)
