"""Incidents: one per scope key while its finding persists, as frozen records.

An incident's `phase` is the one source of truth for where it is in its lifecycle
(drwatch/lifecycle.py holds the transitions; docs/failure-detection.md the table):

    detected ──► blocked | awaiting_approval ──► acting ◄──► held (paused at a step)
       │ └─────► detected_only                     │
       │                                    run failed ──► failed
       │                            run succeeded ──► verifying ──► (next plan due) detected
       │                                                 └──► settled (the rest: no playbook)
       └──────────────── finding gone and healed ──────────────► ended (outcome final)

`state` and `outcome` (the API's words) are derived from the phase; `outcome` is the
current verdict while open and the final one once ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from enum import Enum, StrEnum
from types import UnionType
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from drwatch.model.findings import Finding, Severity
from drwatch.model.plan import PlaybookName, Scope, StepRecord

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class Phase(StrEnum):
    """Where an incident is. Each phase names what drwatch does about it next."""

    DETECTED = "detected"  # to be decided: just opened, or a run ended and a plan is due
    BLOCKED = "blocked"  # a gate holds its plan; re-decided every tick
    AWAITING_APPROVAL = "awaiting_approval"  # only approval holds it
    DETECTED_ONLY = "detected_only"  # nothing to run (an alert, no playbook, no runner)
    ACTING = "acting"  # a run in flight
    HELD = "held"  # a run in flight, held by the kill switch before its next step
    VERIFYING = "verifying"  # every plan ran; the finding must go (healed) to end it
    FAILED = "failed"  # a run failed; not retried; open until the finding goes
    SETTLED = "settled"  # recovered what a playbook can; the rest is left to the operator
    ENDED = "ended"  # closed; `final` is the outcome

    @property
    def in_flight(self) -> bool:
        return self in (Phase.ACTING, Phase.HELD)


class IncidentState(StrEnum):
    OPEN = "open"  # detected; deciding, blocked, awaiting approval or detected only
    ACTING = "acting"  # playbooks submitted and running (or verifying)
    ENDED = "ended"  # closed_at is set; outcome is final


class IncidentOutcome(StrEnum):
    RECOVERED = "recovered"
    FAILED = "failed"
    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    DETECTED_ONLY = "detected_only"
    CLEARED = "cleared"


_STATE_OF = {
    Phase.ACTING: IncidentState.ACTING,
    Phase.HELD: IncidentState.ACTING,
    Phase.VERIFYING: IncidentState.ACTING,
    Phase.ENDED: IncidentState.ENDED,
}
_OUTCOME_OF = {
    Phase.BLOCKED: IncidentOutcome.BLOCKED,
    Phase.HELD: IncidentOutcome.BLOCKED,
    Phase.AWAITING_APPROVAL: IncidentOutcome.AWAITING_APPROVAL,
    Phase.DETECTED_ONLY: IncidentOutcome.DETECTED_ONLY,
    Phase.FAILED: IncidentOutcome.FAILED,
    Phase.SETTLED: IncidentOutcome.RECOVERED,
}


@dataclass(frozen=True, slots=True)
class GateEntry:
    """The gate reasons at `at` (recorded when they change, not every tick)."""

    at: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    scope: Scope
    scope_key: str
    finding: Finding
    severity: Severity
    region: str
    zone: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    target_ids: tuple[str, ...]
    target_names: tuple[str, ...]
    opened_at: float
    updated_at: float
    evidence: str = ""
    # What opened the incident: `finding` and `evidence` follow the current diagnosis
    # (a stopped instance started again may now be unreachable), these never change.
    opened_finding: Finding | None = None
    opened_evidence: str = ""
    phase: Phase = Phase.DETECTED
    # The final outcome, once ended (recovered, failed, detected_only or cleared).
    final: IncidentOutcome | None = None
    closed_at: float | None = None
    playbook: PlaybookName | None = None
    playbooks: tuple[PlaybookName, ...] = ()
    acted_at: float | None = None
    recovered_at: float | None = None
    approved_at: float | None = None
    gate_reasons: tuple[str, ...] = ()
    gate_history: tuple[GateEntry, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    detail: str = ""
    # Bookkeeping of the runs: one plan runs at a time per incident (a zone incident
    # runs its groups' plans in turn); finished runs' ids, groups and steps are kept.
    current_group: str | None = None
    current_targets: tuple[str, ...] = ()
    submitted_at: float | None = None
    run_ids_done: tuple[str, ...] = ()
    groups_done: tuple[str, ...] = ()
    steps_done: tuple[StepRecord, ...] = ()

    @property
    def role(self) -> str:
        return ",".join(self.roles)

    @property
    def is_open(self) -> bool:
        return self.phase is not Phase.ENDED

    @property
    def state(self) -> IncidentState:
        return _STATE_OF.get(self.phase, IncidentState.OPEN)

    @property
    def outcome(self) -> IncidentOutcome | None:
        """The verdict while open (None while deciding, acting or verifying), the final
        outcome once ended."""
        return self.final if self.phase is Phase.ENDED else _OUTCOME_OF.get(self.phase)

    @property
    def cause(self) -> Finding:
        """The finding that opened it."""
        return self.opened_finding or self.finding

    def with_(self, **changes: Any) -> Incident:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record, generated from the fields (see `to_json`)."""
        out: dict[str, Any] = to_json(self)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        """From a record written by `to_dict`, by this or an older version: fields it
        lacks take their defaults; a record from before `phase` gets its phase from the
        old state, outcome and run_ended_at."""
        d = {"opened_finding": d.get("finding"), "opened_evidence": d.get("evidence"), **d}
        if "phase" not in d:
            d.update(_phase_from_old(d))
        known = {f.name for f in fields(cls)}
        return from_json(cls, {k: v for k, v in d.items() if k in known})


def _phase_from_old(d: Mapping[str, Any]) -> dict[str, Any]:
    """Records written before `phase`: state open|acting|ended, outcome, run_ended_at."""
    state, outcome = d.get("state"), d.get("outcome")
    if state == "ended":
        return {"phase": Phase.ENDED.value, "final": outcome}
    if state == "acting":
        phase = Phase.ACTING if d.get("run_ended_at") is None else Phase.VERIFYING
        return {"phase": (Phase.HELD if outcome == "blocked" else phase).value}
    old = {
        "blocked": Phase.BLOCKED,
        "awaiting_approval": Phase.AWAITING_APPROVAL,
        "detected_only": Phase.DETECTED_ONLY,
        "failed": Phase.FAILED,
        "recovered": Phase.SETTLED,
    }
    return {"phase": old.get(outcome or "", Phase.DETECTED).value}


def to_json(value: Any) -> Any:
    """Plain JSON from frozen dataclasses, enums (their value) and tuples (lists)."""
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[T], raw: Mapping[str, Any]) -> T:
    """The dataclass `cls` from `to_json`'s output, each field decoded by its type hint;
    a missing field takes its default (a missing required one raises KeyError)."""
    hints = _hints(cls)
    kwargs = {f.name: _decode(hints[f.name], raw[f.name]) for f in fields(cls) if f.name in raw}
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in raw and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise KeyError(f"{cls.__name__}: missing {', '.join(missing)}")
    return cls(**kwargs)


def _hints(cls: type[Any]) -> dict[str, Any]:
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = get_type_hints(cls)
    return found


def _decode(tp: Any, raw: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, UnionType):
        inner = next(a for a in args if a is not type(None))
        return None if raw is None else _decode(inner, raw)
    if origin is tuple:
        return tuple(_decode(args[0], v) for v in raw)
    return _decode_one(tp, raw)


def _decode_one(tp: Any, raw: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(raw)
    if isinstance(tp, type) and is_dataclass(tp):
        return from_json(tp, raw)
    return float(raw) if tp is float and isinstance(raw, int) else raw


_HINTS: dict[type[Any], dict[str, Any]] = {}
