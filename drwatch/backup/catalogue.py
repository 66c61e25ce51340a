"""The catalogue: every backup at every location, with its state and why.

One row per (backup, location). A run that fails is recorded too (`failed`, with the
reason): it counts for nothing toward the RPO, but `backup_failing` counts it. The
`Catalogue` Protocol is what the rest of drwatch uses, so a shared store (etcd, for
several watchers) can replace the SQLite one later; `SqliteCatalogue` keeps its own
file under the state directory (WAL, synchronous=FULL, like the incident store).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from drwatch.backup.manifest import Manifest
from drwatch.backup.model import State

FILENAME = "backups.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    backup_id TEXT NOT NULL,
    location TEXT NOT NULL,
    data_class TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    why TEXT NOT NULL,
    checked_at REAL,
    verified_at REAL,
    manifest TEXT,
    PRIMARY KEY (backup_id, location)
);
CREATE INDEX IF NOT EXISTS backups_class ON backups (data_class, location, created_at);
"""


@dataclass(frozen=True)
class Entry:
    """One backup at one location. `created_at` is the data's time (when it was taken);
    `verified_at` when drwatch first found it good there, `checked_at` the last look."""

    backup_id: str
    data_class: str
    kind: str
    location: str
    created_at: float
    state: State
    why: str = ""
    size: int = 0
    checked_at: float | None = None
    verified_at: float | None = None
    manifest: Manifest | None = None

    def checked(self, state: State, why: str, now: float) -> Entry:
        """This entry after a verification at `now`."""
        first_good = self.verified_at or (now if state is State.VERIFIED else None)
        return replace(self, state=state, why=why, checked_at=now, verified_at=first_good)

    def to_dict(self) -> dict[str, object]:
        return {
            "backup_id": self.backup_id,
            "data_class": self.data_class,
            "kind": self.kind,
            "location": self.location,
            "created_at": self.created_at,
            "state": self.state.value,
            "why": self.why,
            "size": self.size,
            "checked_at": self.checked_at,
            "verified_at": self.verified_at,
            "chunks": len(self.manifest.chunks) if self.manifest else 0,
        }

    def to_record(self) -> dict[str, object]:
        """Everything, the manifest included: how a shared catalogue stores the entry."""
        body = self.to_dict()
        del body["chunks"]
        body["manifest"] = self.manifest.to_dict() if self.manifest else None
        return body

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> Entry:
        manifest = d.get("manifest")
        return cls(
            backup_id=str(d["backup_id"]),
            data_class=str(d["data_class"]),
            kind=str(d["kind"]),
            location=str(d["location"]),
            created_at=float(d["created_at"]),
            state=State(str(d["state"])),
            why=str(d.get("why", "")),
            size=int(d.get("size", 0)),
            checked_at=None if d.get("checked_at") is None else float(d["checked_at"]),
            verified_at=None if d.get("verified_at") is None else float(d["verified_at"]),
            manifest=Manifest.from_dict(dict(manifest)) if manifest else None,
        )


class Catalogue(Protocol):
    def record(self, entry: Entry) -> None: ...
    def get(self, backup_id: str, location: str) -> Entry | None: ...
    def entries(self, data_class: str | None = None) -> list[Entry]: ...
    def forget(self, backup_id: str, location: str) -> None: ...


class SqliteCatalogue:
    """The catalogue in `state_dir/backups.sqlite3`."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a verified backup counts for the RPO only once it is on disk.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record(self, entry: Entry) -> None:
        self._db.execute(
            "INSERT INTO backups (backup_id, location, data_class, kind, created_at, size,"
            " state, why, checked_at, verified_at, manifest)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(backup_id, location) DO UPDATE"
            " SET size = excluded.size, state = excluded.state, why = excluded.why,"
            " checked_at = excluded.checked_at, verified_at = excluded.verified_at,"
            " manifest = excluded.manifest",
            (
                entry.backup_id,
                entry.location,
                entry.data_class,
                entry.kind,
                entry.created_at,
                entry.size,
                entry.state.value,
                entry.why,
                entry.checked_at,
                entry.verified_at,
                entry.manifest.to_json().decode() if entry.manifest else None,
            ),
        )

    def get(self, backup_id: str, location: str) -> Entry | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM backups WHERE backup_id = ? AND location = ?",  # noqa: S608
            (backup_id, location),
        ).fetchone()
        return _entry(row) if row else None

    def entries(self, data_class: str | None = None) -> list[Entry]:
        """Newest first (by the data's time)."""
        where, args = ("WHERE data_class = ?", (data_class,)) if data_class else ("", ())
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM backups {where} ORDER BY created_at DESC, backup_id DESC",  # noqa: S608
            args,
        )
        return [_entry(r) for r in rows]

    def forget(self, backup_id: str, location: str) -> None:
        self._db.execute(
            "DELETE FROM backups WHERE backup_id = ? AND location = ?", (backup_id, location)
        )


_COLUMNS = (
    "backup_id, data_class, kind, location, created_at, state, why, size,"
    " checked_at, verified_at, manifest"
)


def _entry(row: tuple[object, ...]) -> Entry:
    manifest = Manifest.from_dict(json.loads(str(row[10]))) if row[10] else None
    return Entry(
        backup_id=str(row[0]),
        data_class=str(row[1]),
        kind=str(row[2]),
        location=str(row[3]),
        created_at=float(str(row[4])),
        state=State(str(row[5])),
        why=str(row[6]),
        size=int(str(row[7])),
        checked_at=None if row[8] is None else float(str(row[8])),
        verified_at=None if row[9] is None else float(str(row[9])),
        manifest=manifest,
    )
