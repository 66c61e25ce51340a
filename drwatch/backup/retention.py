"""Retention: which backups a location may drop. Pure: entries, rules and `now` in.

Per class, kind, location and source host (each host's configuration archive is kept on
its own), a backup is dropped when it is beyond the `keep` newest
or older than `max_age`, except the newest verified one (whatever its age: it is what
the RPO and a restore rest on) and a run still pending (in progress or unchecked).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from drwatch.backup.catalogue import Entry
from drwatch.backup.config import Retention
from drwatch.backup.model import State


def to_prune(
    entries: Iterable[Entry], retention_of: Mapping[str, Retention], now: float
) -> list[Entry]:
    """The entries to delete (objects and catalogue row), oldest first."""
    groups: dict[tuple[str, str, str, str], list[Entry]] = {}
    for e in entries:
        if e.location in retention_of:
            host = e.manifest.source.get("host", "") if e.manifest is not None else ""
            groups.setdefault((e.data_class, e.kind, e.location, host), []).append(e)
    out: list[Entry] = []
    for (_, _, location, _), group in groups.items():
        out.extend(_prune_group(group, retention_of[location], now))
    return sorted(out, key=lambda e: (e.created_at, e.backup_id, e.location))


def _prune_group(group: list[Entry], rule: Retention, now: float) -> list[Entry]:
    newest_first = sorted(group, key=lambda e: (-e.created_at, e.backup_id))
    anchor = next((e for e in newest_first if e.state is State.VERIFIED), None)
    return [
        e
        for i, e in enumerate(newest_first)
        if e is not anchor
        and e.state is not State.PENDING
        and (i >= rule.keep or now - e.created_at > rule.max_age)
    ]
