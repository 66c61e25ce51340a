"""Incidents: one per scope key while its finding persists, as frozen records.

Lifecycle (docs/failure-detection.md has the full table):

    open ──(gates pass, plans submitted)──► acting ──► ended: recovered | failed
      │ outcome while open: blocked | awaiting_approval | detected_only (re-decided each tick)
      └──(finding gone before any action)──► ended: cleared (detected_only stays detected_only)

`outcome` is the current verdict while open and the final one once `closed_at` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from drwatch.model.plan import PlaybookName, Scope, StepRecord, StepStatus


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
    finding: str
    severity: str
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
    opened_finding: str = ""
    opened_evidence: str = ""
    state: IncidentState = IncidentState.OPEN
    outcome: IncidentOutcome | None = None
    closed_at: float | None = None
    playbook: PlaybookName | None = None
    playbooks: tuple[PlaybookName, ...] = ()
    acted_at: float | None = None
    run_ended_at: float | None = None
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
        return self.closed_at is None

    def with_(self, **changes: Any) -> Incident:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope.value,
            "scope_key": self.scope_key,
            "finding": self.finding,
            "severity": self.severity,
            "region": self.region,
            "zone": self.zone,
            "roles": list(self.roles),
            "groups": list(self.groups),
            "target_ids": list(self.target_ids),
            "target_names": list(self.target_names),
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "evidence": self.evidence,
            "opened_finding": self.opened_finding,
            "opened_evidence": self.opened_evidence,
            "state": self.state.value,
            "outcome": self.outcome.value if self.outcome else None,
            "closed_at": self.closed_at,
            "playbook": self.playbook.value if self.playbook else None,
            "playbooks": [p.value for p in self.playbooks],
            "acted_at": self.acted_at,
            "run_ended_at": self.run_ended_at,
            "recovered_at": self.recovered_at,
            "approved_at": self.approved_at,
            "gate_reasons": list(self.gate_reasons),
            "gate_history": [{"at": g.at, "reasons": list(g.reasons)} for g in self.gate_history],
            "steps": [_step_dict(s) for s in self.steps],
            "detail": self.detail,
            "current_group": self.current_group,
            "current_targets": list(self.current_targets),
            "submitted_at": self.submitted_at,
            "run_ids_done": list(self.run_ids_done),
            "groups_done": list(self.groups_done),
            "steps_done": [_step_dict(s) for s in self.steps_done],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        return cls(
            id=d["id"],
            scope=Scope(d["scope"]),
            scope_key=d["scope_key"],
            finding=d["finding"],
            severity=d["severity"],
            region=d["region"],
            zone=d["zone"],
            roles=tuple(d["roles"]),
            groups=tuple(d["groups"]),
            target_ids=tuple(d["target_ids"]),
            target_names=tuple(d["target_names"]),
            opened_at=d["opened_at"],
            updated_at=d["updated_at"],
            evidence=d.get("evidence", ""),
            opened_finding=d.get("opened_finding") or d["finding"],
            opened_evidence=d.get("opened_evidence") or d.get("evidence", ""),
            state=IncidentState(d["state"]),
            outcome=IncidentOutcome(d["outcome"]) if d.get("outcome") else None,
            closed_at=d.get("closed_at"),
            playbook=PlaybookName(d["playbook"]) if d.get("playbook") else None,
            playbooks=tuple(PlaybookName(p) for p in d.get("playbooks", ())),
            acted_at=d.get("acted_at"),
            run_ended_at=d.get("run_ended_at"),
            recovered_at=d.get("recovered_at"),
            approved_at=d.get("approved_at"),
            gate_reasons=tuple(d.get("gate_reasons", ())),
            gate_history=tuple(
                GateEntry(g["at"], tuple(g["reasons"])) for g in d.get("gate_history", ())
            ),
            steps=tuple(_step_from(s) for s in d.get("steps", ())),
            detail=d.get("detail", ""),
            current_group=d.get("current_group"),
            current_targets=tuple(d.get("current_targets", ())),
            submitted_at=d.get("submitted_at"),
            run_ids_done=tuple(d.get("run_ids_done", ())),
            groups_done=tuple(d.get("groups_done", ())),
            steps_done=tuple(_step_from(s) for s in d.get("steps_done", ())),
        )


def _step_dict(s: StepRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "status": s.status.value,
        "started_at": s.started_at,
        "ended_at": s.ended_at,
        "detail": s.detail,
    }


def _step_from(d: dict[str, Any]) -> StepRecord:
    return StepRecord(
        name=d["name"],
        status=StepStatus(d["status"]),
        started_at=d.get("started_at"),
        ended_at=d.get("ended_at"),
        detail=d.get("detail", ""),
    )
