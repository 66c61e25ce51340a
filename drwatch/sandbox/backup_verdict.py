"""`[[expect_backup]]` (DESIGN.md, drill contract, second part): what the drill saw of
the daemon's catalogue (`GET /api/v1/backups`) and whether each expectation was met.

A backup counts for an expectation when it shows in the expected state, at the
expected location, for the first time at or after the reference point: the timeline's
last event (the cause: a fault, or the heal after it), or the moment the sandbox was
healthy when the timeline has none. So "verified after the heal" needs a backup
verified after the heal, not the one verified before the outage; `within` is measured
from that point. Pure, like drwatch.sandbox.verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from drwatch.units import parse_duration


def _duration(value: object) -> float:
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"a time cannot be negative (got {value!r})")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


class ExpectBackup(BaseModel):
    """A backup of a class, kind and location in a state, in the daemon's catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_class: str
    kind: Literal["config_archive", "volume_snapshot", "dump", "image"]
    location: Literal["primary", "standby_region", "offsite"]
    state: Literal["verified", "corrupt", "missing"]
    within: Duration | None = None

    def describe(self) -> str:
        parts = [f"{self.data_class} {self.kind} at {self.location} {self.state}"]
        if self.within is not None:
            parts.append(f"within {self.within:g}s")
        return " ".join(parts)


@dataclass(frozen=True)
class BackupSighting:
    """One backup at one location in one state, first seen at `first_seen` (epoch)."""

    backup_id: str
    data_class: str
    kind: str
    location: str
    state: str
    first_seen: float


def parse_backups(body: object) -> list[tuple[str, str, str, str, str]]:
    """(backup_id, data_class, kind, location, state) of each backup in the body."""
    items = body.get("backups") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        return []
    keys = ("backup_id", "data_class", "kind", "location", "state")
    return [
        (str(b["backup_id"]), str(b["data_class"]), str(b["kind"]), str(b["location"]),
         str(b["state"]))
        for b in items
        if isinstance(b, Mapping) and all(k in b for k in keys)
    ]  # fmt: skip


def reference_s(events: Sequence[Any], healthy_at_s: float | None) -> float:
    """The timeline's last event that happened (seconds from the drill's start), else
    the moment the sandbox was healthy."""
    done = [e.at_s for e in events if not getattr(e, "error", "")]
    return max(done) if done else (healthy_at_s or 0.0)


def judge_backup(
    eb: ExpectBackup, sightings: Sequence[BackupSighting], start: float, ref_s: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"expect_backup": eb.model_dump(exclude_none=True)}
    found = sorted(
        (
            s
            for s in sightings
            if (s.data_class, s.kind, s.location, s.state)
            == (eb.data_class, eb.kind, eb.location, eb.state)
            and s.first_seen - start >= ref_s - 0.5
        ),
        key=lambda s: s.first_seen,
    )
    if not found:
        states = sorted({s.state for s in sightings
                         if (s.data_class, s.kind, s.location) ==
                         (eb.data_class, eb.kind, eb.location)})  # fmt: skip
        seen = ", ".join(states) or "nothing"
        return {**out, "met": False, "reason": f"never seen after {ref_s:.1f}s (seen: {seen})"}
    first = found[0]
    took = first.first_seen - start - ref_s
    reason = f"{first.backup_id} {eb.state} {max(0.0, took):.1f}s after {ref_s:.1f}s"
    if eb.within is not None and took > eb.within:
        return {**out, "met": False, "reason": f"{reason} (within {eb.within:g}s)"}
    return {**out, "met": True, "reason": reason}
