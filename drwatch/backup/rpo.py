"""RPO compliance: per data class and location, the age of the newest verified backup.

Pure: catalogue entries, objectives and `now` in, statuses and findings out. Only a
backup whose state is `verified` now counts (a corrupt or missing one never does, an
older verified one still does). Older than the class's RPO is `backup_rpo_breached`;
`failing_after` bad runs in a row since the last verified one is `backup_failing`.
A class with no verified backup yet is breached once it has been watched for longer
than its RPO (a fresh start is not an alarm, a backup that never comes is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from drwatch.backup.catalogue import Entry
from drwatch.backup.model import State
from drwatch.units import format_duration

_BAD = frozenset({State.FAILED, State.CORRUPT, State.MISSING})


class BackupFinding(StrEnum):
    RPO_BREACHED = "backup_rpo_breached"
    FAILING = "backup_failing"
    UNRESTORABLE = "backup_unrestorable"
    RESTORE_TEST_OVERDUE = "backup_restore_test_overdue"
    IMAGE_COPY_PENDING = "image_copy_pending"

    @property
    def description(self) -> str:
        return {
            BackupFinding.RPO_BREACHED: (
                "the newest verified backup of a data class at a location is older than its RPO"
            ),
            BackupFinding.FAILING: (
                "the latest backups of a data class at a location failed, or were found "
                "corrupt or missing, several times in a row"
            ),
            BackupFinding.UNRESTORABLE: (
                "database.recover restored a backup the catalogue had verified and found its "
                "data corrupt: the newest backup was bad"
            ),
            BackupFinding.RESTORE_TEST_OVERDUE: (
                "no scheduled restore test has passed within backup.restore_test.max_age: "
                "nobody has proven lately that the data restores"
            ),
            BackupFinding.IMAGE_COPY_PENDING: (
                "a group's machine image is missing in a region it may launch in and "
                "drwatch's copy there has not completed yet"
            ),
        }[self]


@dataclass(frozen=True)
class Objective:
    """What one class must meet: its RPO, at these locations, watched since `since`."""

    data_class: str
    rpo: float
    locations: tuple[str, ...]
    since: float


@dataclass(frozen=True)
class Status:
    data_class: str
    location: str
    rpo: float
    newest_verified: Entry | None
    age: float | None  # of the newest verified backup's data; None: there is none
    bad_in_a_row: int
    breached: bool
    failing: bool

    def to_dict(self) -> dict[str, object]:
        newest = self.newest_verified
        return {
            "data_class": self.data_class,
            "location": self.location,
            "rpo_s": self.rpo,
            "age_s": self.age,
            "newest_verified": newest.backup_id if newest else None,
            "newest_verified_at": newest.created_at if newest else None,
            "newest_verified_kind": newest.kind if newest else None,
            "bad_in_a_row": self.bad_in_a_row,
            "breached": self.breached,
            "failing": self.failing,
        }


@dataclass(frozen=True)
class Diagnosis:
    finding: BackupFinding
    data_class: str
    location: str
    age: float | None
    message: str
    # What else names it (an image copy: group, image, region), in the status's facts.
    facts: tuple[tuple[str, str], ...] = ()


def compliance(
    entries: Iterable[Entry], objectives: Sequence[Objective], now: float, failing_after: int
) -> list[Status]:
    """One status per objective and location, in the objectives' order."""
    by_place: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        by_place.setdefault((e.data_class, e.location), []).append(e)
    out = []
    for obj in objectives:
        for loc in obj.locations:
            found = sorted(by_place.get((obj.data_class, loc), []), key=_newest_first)
            out.append(_status(obj, loc, found, now, failing_after))
    return out


def _newest_first(e: Entry) -> tuple[float, str]:
    return (-e.created_at, e.backup_id)


def _status(
    obj: Objective, loc: str, newest_first: list[Entry], now: float, failing_after: int
) -> Status:
    newest = next((e for e in newest_first if e.state is State.VERIFIED), None)
    age = None if newest is None else max(0.0, now - newest.created_at)
    bad = 0
    for e in newest_first:
        if e.state is State.VERIFIED:
            break
        bad += e.state in _BAD
    breached = age > obj.rpo if age is not None else now - obj.since > obj.rpo
    return Status(
        data_class=obj.data_class,
        location=loc,
        rpo=obj.rpo,
        newest_verified=newest,
        age=age,
        bad_in_a_row=bad,
        breached=breached,
        failing=bad >= failing_after,
    )


def findings(statuses: Iterable[Status]) -> list[Diagnosis]:
    """The findings the statuses make, with the class, location and age in the message."""
    out = []
    for s in statuses:
        if s.breached:
            age = "no verified backup" if s.age is None else f"newest verified {_ago(s.age)} old"
            out.append(
                Diagnosis(
                    BackupFinding.RPO_BREACHED,
                    s.data_class,
                    s.location,
                    s.age,
                    f"{s.data_class} at {s.location}: {age}, RPO {format_duration(s.rpo)}",
                )
            )
        if s.failing:
            out.append(
                Diagnosis(
                    BackupFinding.FAILING,
                    s.data_class,
                    s.location,
                    s.age,
                    f"{s.data_class} at {s.location}: the last {s.bad_in_a_row} backups failed "
                    "or did not verify",
                )
            )
    return out


def image_copies_pending(entries: Iterable[Entry], now: float) -> list[Diagnosis]:
    """An image check's `pending` entry (a copy started, not completed) is a warning
    until a later check finds the copy available (and supersedes the entry)."""
    out = []
    for e in entries:
        if e.kind != "image" or e.state is not State.PENDING or e.manifest is None:
            continue
        src = e.manifest.source
        image, region = src.get("name", "?"), src.get("region", "?")
        group = src.get("groups", "")
        age = max(0.0, now - e.created_at)
        out.append(
            Diagnosis(
                BackupFinding.IMAGE_COPY_PENDING,
                e.data_class,
                e.location,
                age,
                f"image {image} (group {group or '?'}) missing in {region}: copy "
                f"{src.get('image_id', '?')} started {_ago(age)} ago, not completed yet",
                (("group", group), ("image", image), ("region", region)),
            )
        )
    return out


def _ago(seconds: float) -> str:
    return format_duration(float(round(seconds)))
