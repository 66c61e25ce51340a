"""The crash-safe journal of playbook runs: SQLite in WAL mode with `synchronous=FULL`.

Three tables, each row naming the runner (watcher) that wrote it:

- `runs`: one per playbook run (incident, playbook, the plan as JSON, status).
- `steps`: one per named step of a run: `intent` while it runs, then `done`,
  `skipped` or `failed`, with a detail line and a JSON result.
- `effects`: one per side effect inside a step, written as `intent` (with the
  parameters the step chose) and committed BEFORE the side effect is made, then
  `done` with its result. A resumed run reads these to never repeat a side effect.

Every write is its own committed transaction: when a method returns, the row is on
disk. The methods are synchronous and short; the runner calls them from a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drwatch.model.plan import Plan, PlaybookName

JSON = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    playbook    TEXT NOT NULL,
    plan        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    started_at  REAL NOT NULL,
    ended_at    REAL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_incident ON runs (incident_id, started_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS steps (
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    result     TEXT NOT NULL DEFAULT '{}',
    owner      TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS effects (
    run_id    TEXT NOT NULL REFERENCES runs (run_id),
    step      TEXT NOT NULL,
    key       TEXT NOT NULL,
    status    TEXT NOT NULL,
    params    TEXT NOT NULL,
    result    TEXT,
    owner     TEXT NOT NULL,
    intent_at REAL NOT NULL,
    done_at   REAL,
    PRIMARY KEY (run_id, step, key)
);
"""

RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED = "running", "succeeded", "failed"
STEP_INTENT, STEP_DONE, STEP_SKIPPED, STEP_FAILED = "intent", "done", "skipped", "failed"
EFFECT_INTENT, EFFECT_DONE = "intent", "done"


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    incident_id: str
    playbook: PlaybookName
    plan: Plan
    owner: str
    status: str
    detail: str
    started_at: float
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class StepRow:
    run_id: str
    name: str
    status: str
    detail: str
    result: JSON
    owner: str
    started_at: float
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class EffectRow:
    run_id: str
    step: str
    key: str
    status: str
    params: JSON
    result: JSON | None
    owner: str


def plan_to_json(plan: Plan) -> str:
    return json.dumps(
        {
            "incident_id": plan.incident_id,
            "playbook": plan.playbook.value,
            "region": plan.region,
            "zone": plan.zone,
            "group": plan.group,
            "targets": list(plan.targets),
            "avoid_zones": list(plan.avoid_zones),
            "reason": plan.reason,
        },
        sort_keys=True,
    )


def plan_from_json(text: str) -> Plan:
    d = json.loads(text)
    return Plan(
        incident_id=d["incident_id"],
        playbook=PlaybookName(d["playbook"]),
        region=d["region"],
        zone=d["zone"],
        group=d["group"],
        targets=tuple(d["targets"]),
        avoid_zones=tuple(d.get("avoid_zones", ())),
        reason=d.get("reason", ""),
    )


class Journal:
    """The journal file under the state directory. One instance per process."""

    FILE_NAME = "journal.sqlite3"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The runner writes from worker threads; the lock serialises them.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed intent survives power loss, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / cls.FILE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- runs -----------------------------------------------------------------

    def start_run(self, run_id: str, plan: Plan, owner: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, incident_id, playbook, plan, owner, status,"
                " started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    plan.incident_id,
                    plan.playbook.value,
                    plan_to_json(plan),
                    owner,
                    RUN_RUNNING,
                    now,
                    now,
                ),
            )

    def take_over(self, run_id: str, owner: str, now: float) -> None:
        """A resumed run: the runner that continues it now owns it."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET owner = ?, updated_at = ? WHERE run_id = ?", (owner, now, run_id)
            )

    def finish_run(self, run_id: str, status: str, detail: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, detail = ?, ended_at = ?, updated_at = ?"
                " WHERE run_id = ?",
                (status, detail, now, now, run_id),
            )

    def run(self, run_id: str) -> RunRow | None:
        rows = self._query(
            "SELECT run_id, incident_id, playbook, plan, owner, status, detail, started_at,"
            " ended_at FROM runs WHERE run_id = ?",
            (run_id,),
        )
        return _run_row(rows[0]) if rows else None

    def unfinished(self) -> list[RunRow]:
        rows = self._query(
            "SELECT run_id, incident_id, playbook, plan, owner, status, detail, started_at,"
            " ended_at FROM runs WHERE status = ? ORDER BY started_at",
            (RUN_RUNNING,),
        )
        return [_run_row(r) for r in rows]

    def recent(self, limit: int = 500) -> list[RunRow]:
        rows = self._query(
            "SELECT run_id, incident_id, playbook, plan, owner, status, detail, started_at,"
            " ended_at FROM runs ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        return [_run_row(r) for r in reversed(rows)]

    # -- steps ----------------------------------------------------------------

    def step_intent(self, run_id: str, name: str, owner: str, now: float) -> None:
        """Mark a step started. Re-entering a step after a crash keeps its first start time."""
        with self._tx() as db:
            seq = db.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (run_id,)).fetchone()
            db.execute(
                "INSERT INTO steps (run_id, seq, name, status, owner, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET owner ="
                " excluded.owner",
                (run_id, seq[0], name, STEP_INTENT, owner, now),
            )

    def step_end(
        self,
        run_id: str,
        name: str,
        status: str,
        *,
        detail: str,
        result: JSON,
        owner: str,
        now: float,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE steps SET status = ?, detail = ?, result = ?, owner = ?, ended_at = ?"
                " WHERE run_id = ? AND name = ?",
                (status, detail, json.dumps(result, sort_keys=True), owner, now, run_id, name),
            )

    def steps(self, run_id: str) -> list[StepRow]:
        rows = self._query(
            "SELECT run_id, name, status, detail, result, owner, started_at, ended_at"
            " FROM steps WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [StepRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    # -- effects --------------------------------------------------------------

    def effect(self, run_id: str, step: str, key: str) -> EffectRow | None:
        rows = self._query(
            "SELECT run_id, step, key, status, params, result, owner FROM effects"
            " WHERE run_id = ? AND step = ? AND key = ?",
            (run_id, step, key),
        )
        if not rows:
            return None
        r = rows[0]
        result = json.loads(r[5]) if r[5] is not None else None
        return EffectRow(r[0], r[1], r[2], r[3], json.loads(r[4]), result, r[6])

    def effect_intent(
        self, run_id: str, step: str, key: str, *, params: JSON, owner: str, now: float
    ) -> None:
        """Committed before the side effect is made: a crash after this leaves a trace."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO effects (run_id, step, key, status, params, owner, intent_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, step, key, EFFECT_INTENT, json.dumps(params, sort_keys=True), owner, now),
            )

    def effect_done(
        self, run_id: str, step: str, key: str, *, result: JSON, owner: str, now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE effects SET status = ?, result = ?, owner = ?, done_at = ?"
                " WHERE run_id = ? AND step = ? AND key = ?",
                (EFFECT_DONE, json.dumps(result, sort_keys=True), owner, now, run_id, step, key),
            )

    def has_effects(self, run_id: str) -> bool:
        rows = self._query("SELECT 1 FROM effects WHERE run_id = ? LIMIT 1", (run_id,))
        return bool(rows)


def _run_row(r: tuple[Any, ...]) -> RunRow:
    return RunRow(
        run_id=r[0],
        incident_id=r[1],
        playbook=PlaybookName(r[2]),
        plan=plan_from_json(r[3]),
        owner=r[4],
        status=r[5],
        detail=r[6],
        started_at=r[7],
        ended_at=r[8],
    )
