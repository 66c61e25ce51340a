"""The incident store: SQLite (WAL) under the state directory; survives restarts.

One row per incident (indexed columns plus the record as JSON), a table of retired
instance ids (replaced by a playbook: assess no longer judges them), the database
role each instance last reported (drwatch.roles), and a small key/value table for the
operator's controls (pause). Calls are synchronous and short:
the tick runs them between awaits.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from drwatch.logs import get_logger
from drwatch.model.incident import Incident

log = get_logger(component="incidents")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    scope_key TEXT NOT NULL,
    opened_at REAL NOT NULL,
    closed_at REAL,
    acted_at REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_acted ON incidents (acted_at);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (closed_at, scope_key);
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS retired (
    instance_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS controls (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS db_roles (instance_id TEXT PRIMARY KEY, role TEXT NOT NULL);
"""

FILENAME = "incidents.sqlite3"


def new_incident_id(now: float) -> str:
    """`inc-20261126T140501-3f9a`: sortable by time, unique by the random tail."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"inc-{stamp}-{secrets.token_hex(2)}"


class IncidentStore:
    """Incidents, retired instances, remembered database roles and operator controls,
    kept in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an incident's "acting" must be on disk before the runner's first effect.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction (one fsync) for a tick's writes; rolled back if the tick fails."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def checkpoint(self) -> None:
        """Make what the batch wrote so far durable now (before a side effect starts)."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")
            self._db.execute("BEGIN IMMEDIATE")

    def save(self, incident: Incident) -> None:
        self._db.execute(
            "INSERT INTO incidents (id, scope_key, opened_at, closed_at, acted_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "closed_at = excluded.closed_at, acted_at = excluded.acted_at, body = excluded.body",
            (
                incident.id,
                incident.scope_key,
                incident.opened_at,
                incident.closed_at,
                incident.acted_at,
                json.dumps(incident.to_dict()),
            ),
        )

    def get(self, incident_id: str) -> Incident | None:
        row = self._db.execute("SELECT body FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _load(row[0]) if row else None

    def open_incidents(self) -> list[Incident]:
        rows = self._db.execute(
            "SELECT body FROM incidents WHERE closed_at IS NULL ORDER BY opened_at, id"
        )
        return _readable(rows)

    def recent(self, *, open_only: bool = False, limit: int = 200) -> list[Incident]:
        """Newest first."""
        where = "WHERE closed_at IS NULL " if open_only else ""
        rows = self._db.execute(
            f"SELECT body FROM incidents {where}ORDER BY opened_at DESC, id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return _readable(rows)

    def acted_since(self, since: float) -> list[Incident]:
        """Incidents whose playbooks started at or after `since` (cooldown, blast radius)."""
        rows = self._db.execute(
            "SELECT body FROM incidents WHERE acted_at >= ? ORDER BY acted_at", (since,)
        )
        return _readable(rows)

    def retire(self, instance_ids: Iterable[str], incident_id: str, at: float) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO retired (instance_id, incident_id, at) VALUES (?, ?, ?)",
            [(i, incident_id, at) for i in instance_ids],
        )

    def retired(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._db.execute("SELECT instance_id FROM retired"))

    def db_roles(self) -> dict[str, str]:
        rows = self._db.execute("SELECT instance_id, role FROM db_roles")
        return {str(i): str(r) for i, r in rows}

    def remember_db_roles(self, roles: Mapping[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO db_roles (instance_id, role) VALUES (?, ?) "
            "ON CONFLICT(instance_id) DO UPDATE SET role = excluded.role",
            list(roles.items()),
        )

    def get_control(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM controls WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_control(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO controls (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _load(body: str) -> Incident:
    return Incident.from_dict(json.loads(body))


def _readable(rows: Iterable[tuple[str]]) -> list[Incident]:
    """The records this version can read. One it cannot (written by a newer drwatch, say,
    with a finding this one does not know) is logged and left out, so the tick and the
    API go on; it stays in the store untouched."""
    out = []
    for (body,) in rows:
        try:
            out.append(_load(body))
        except (ValueError, KeyError, TypeError) as err:
            log.error(
                "incident.unreadable", error=f"{type(err).__name__}: {err}", record=body[:200]
            )
    return out
