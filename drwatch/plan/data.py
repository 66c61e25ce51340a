"""The data section: the data classes, how each is protected, the newest verified
backups and the last restore test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drwatch.config import Config, backup_rpo_of
from drwatch.model.fleet import Role
from drwatch.plan.document import Block, Note, Section, Table
from drwatch.plan.inputs import Live
from drwatch.plan.words import dur, when
from drwatch.units import format_duration

BACKUPS_OFF = (
    "No [backup] section is configured: drwatch takes and verifies no backups, so no "
    "verified backup, no measured RPO and no off-site copy can be shown (docs/backups.md)."
)
DATA_CLASSES = ("fixed", "transient", "configuration", "persistent")
_PROTECTION = {
    "fixed": "an image of each group in every region it may launch in",
    "transient": "deliberately not backed up",
    "configuration": "encrypted archives of the configured paths, copied off-site",
    "persistent": "volume snapshots and encrypted dumps, copied off-site; replicas",
}


def data_section(cfg: Config, live: Live, now: float) -> Section:
    if cfg.backup is None:
        return _data_unconfigured(cfg)
    rpo_of = backup_rpo_of(cfg)
    doc = live.backups or {}
    classes = {
        str(c.get("data_class")): c for c in doc.get("classes") or [] if isinstance(c, Mapping)
    }
    rows = tuple(
        (
            name,
            dc.kind.value,
            ", ".join(dc.groups) or "-",
            _PROTECTION[dc.kind.value],
            format_duration(rpo_of[name]),
            _newest(classes.get(name), now) if live.backups else "-",
        )
        for name, dc in cfg.backup.classes.items()
    )
    headers = ("class", "kind", "groups", "how it is protected", "RPO", "newest verified backup")
    blocks: list[Block] = [Table(headers, rows)] if rows else []
    if not rows:
        blocks.append(Note("unmet", "[backup] names no data class: nothing is backed up."))
    blocks += _backup_state(live, now)
    return Section("data", "Data classes and backups", tuple(blocks))


def _data_unconfigured(cfg: Config) -> Section:
    persistent = [
        f"{g.data_class or '(no data class)'}: databases of group {g.name}"
        for g in cfg.groups
        if g.role is Role.DATABASE
    ]
    what = {
        "fixed": "machine images of every group",
        "transient": "caches, queues, scratch",
        "configuration": "files on the servers",
        "persistent": "; ".join(persistent) or "no database group configured",
    }
    rows = tuple((c, what[c], _PROTECTION[c], "-") for c in DATA_CLASSES)
    blocks: list[Block] = [
        Table(("class", "what is in it", "how it is protected", "newest verified backup"), rows),
        Note("missing", BACKUPS_OFF),
    ]
    return Section("data", "Data classes and backups", tuple(blocks))


def _newest(doc: Mapping[str, Any] | None, now: float) -> str:
    """`primary: 4 m ago; offsite: none verified` for one class's locations."""
    if doc is None or not doc.get("backed_up", True):
        return "not backed up (on purpose)"
    parts = []
    for loc in doc.get("locations") or []:
        at = loc.get("newest_verified_at")
        age = f"{dur(now - float(at))} old" if at is not None else "none verified"
        parts.append(f"{loc.get('location')}: {age}")
    return "; ".join(parts) or "-"


def _backup_state(live: Live, now: float) -> list[Block]:
    """The daemon's backup findings and its last restore test, or why they are not shown."""
    if live.backups is None:
        why = live.backups_error or live.error or "no --api URL was given"
        return [Note("missing", f"Verified backups and restore tests need the live state: {why}.")]
    doc = live.backups
    blocks: list[Block] = [
        Note("unmet", str(f.get("message") or f.get("finding")))
        for f in doc.get("findings") or []
        if isinstance(f, Mapping)
    ]
    blocks.append(_restore_proof(doc.get("restore_test"), now))
    return blocks


def _restore_proof(test: Any, now: float) -> Block:
    """When the data was last proven restorable (the newest dump decrypted and restored)."""
    if not isinstance(test, Mapping) or not test.get("enabled"):
        return Note(
            "missing",
            "drwatch does not test restores by itself (the watcher holds no private key): "
            "run `drwatch backup restore-test` with the offline key and record it.",
        )
    last = test.get("last_passed")
    if not isinstance(last, Mapping):
        return Note("unmet", "No restore test has passed yet: no backup is proven restorable.")
    took, age = dur(last.get("restore_s")), dur(last.get("data_age_s"))
    line = (
        f"Last proven restorable {when(float(last['at']))}: {last.get('backup_id')} restored "
        f"{last.get('rows')} rows in {took}, data {age} old."
    )
    overdue = test.get("overdue")
    return Note("unmet" if overdue else "ok", line + (" Overdue." if overdue else ""))
