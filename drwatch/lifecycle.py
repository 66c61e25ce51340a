"""The incident lifecycle as one pure state machine.

Each transition takes an incident, what the tick saw about it and `now`, and returns a
`Step`: the incident after it, the changes to record, and what the cycle must do (a plan
to submit, instances to retire). No I/O, no clock: `Cycle` gathers the inputs (the
diagnosis for the incident's key, whether its targets answer again, its run's progress,
the gates' decision) and applies the steps. tests/unit/test_lifecycle.py has a case for
every phase and transition; docs/failure-detection.md the table.

    detected ──► blocked | awaiting_approval ──(gates pass)──► acting ◄──► held
       │  └────► detected_only                                    │
       │                                                 run failed ──► failed
       │                                         run succeeded ──► verifying
       │                                   (finding persists, a plan is due) ──► detected
       │                           (finding persists, nothing left to run) ──► settled
       └── finding gone and healed ──► ended: cleared | recovered | detected_only | failed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from drwatch.decide.gates import Decision
from drwatch.model.findings import Diagnosis
from drwatch.model.incident import GateEntry, Incident, IncidentOutcome, Phase
from drwatch.model.plan import Plan, RunOutcome, RunProgress, Scope, StepRecord

# A decision's outcome, as the phase it puts the incident in.
_HELD_BY = {
    IncidentOutcome.BLOCKED: Phase.BLOCKED,
    IncidentOutcome.AWAITING_APPROVAL: Phase.AWAITING_APPROVAL,
    IncidentOutcome.DETECTED_ONLY: Phase.DETECTED_ONLY,
}
# Phases whose plan is decided this tick (through every gate).
DECIDABLE = frozenset({Phase.DETECTED, Phase.BLOCKED, Phase.AWAITING_APPROVAL})


@dataclass(frozen=True, slots=True)
class IncidentChange:
    incident_id: str
    scope_key: str
    change: str  # opened | updated | acting | blocked | awaiting_approval | detected_only |
    #              recovered | failed | cleared | step
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """A transition's result: the incident after it, the changes to record, a plan to
    submit (the incident already says acting) and instance ids to retire."""

    incident: Incident
    changes: tuple[IncidentChange, ...] = ()
    submit: Plan | None = None
    retire: tuple[str, ...] = ()


def _step(
    inc: Incident,
    change: str,
    detail: str,
    *,
    submit: Plan | None = None,
    retire: tuple[str, ...] = (),
) -> Step:
    return Step(inc, (IncidentChange(inc.id, inc.scope_key, change, detail),), submit, retire)


def _same(inc: Incident) -> Step:
    return Step(inc)


# -- opening -------------------------------------------------------------------------------


def opened(d: Diagnosis, incident_id: str, names: Mapping[str, str], now: float) -> Step:
    """A finding appeared on a key with no open incident: detected, decided this tick."""
    inc = Incident(
        id=incident_id,
        scope=d.scope,
        scope_key=d.key,
        finding=d.finding,
        severity=d.severity,
        region=d.region,
        zone=d.zone,
        roles=tuple(r.value for r in d.roles),
        groups=d.groups,
        target_ids=d.targets,
        target_names=tuple(names.get(t, t) for t in d.targets),
        opened_at=now,
        updated_at=now,
        evidence=d.evidence,
        opened_finding=d.finding,
        opened_evidence=d.evidence,
    )
    return _step(inc, "opened", d.evidence)


# -- runs ----------------------------------------------------------------------------------


def run_progress(
    inc: Incident,
    progress: RunProgress | None,
    *,
    held_by: str | None,
    verify_window: float,
    now: float,
) -> Step:
    """An incident with a run in flight, and what the runner says of it. `held_by` is the
    kill switch's reason when it is on (the runner holds the run before its next step)."""
    if progress is None or progress.run_id in inc.run_ids_done:
        return _lost(inc, verify_window, now)
    if progress.outcome is RunOutcome.RUNNING:
        return _running(inc, progress, held_by, now)
    if progress.outcome is RunOutcome.SUCCEEDED:
        return _succeeded(inc, progress)
    steps = run_steps(inc, progress)
    detail = progress.detail or "playbook failed"
    return _step(inc.with_(phase=Phase.FAILED, steps=steps, detail=detail), "failed", detail)


def _lost(inc: Incident, verify_window: float, now: float) -> Step:
    """Submitted, but the runner shows nothing for it: allow the verify window."""
    if inc.submitted_at is not None and now - inc.submitted_at <= verify_window:
        return _same(inc)
    detail = "the runner has no record of the submitted run"
    return _step(inc.with_(phase=Phase.FAILED, detail=detail), "failed", detail)


def _running(inc: Incident, p: RunProgress, held_by: str | None, now: float) -> Step:
    steps = run_steps(inc, p)
    held = (held_reason(held_by, p),) if held_by is not None else ()
    if held != inc.gate_reasons:
        entry = GateEntry(now, held or ("resumed",))
        after = inc.with_(
            phase=Phase.HELD if held else Phase.ACTING,
            steps=steps,
            gate_reasons=held,
            gate_history=(*inc.gate_history, entry),
        )
        return _step(after, "blocked" if held else "acting", "; ".join(held))
    if steps == inc.steps:
        return _same(inc)
    running = next((s.name for s in reversed(steps) if s.status.value == "running"), "")
    return _step(inc.with_(steps=steps), "step", running)


def _succeeded(inc: Incident, p: RunProgress) -> Step:
    """The run is done: its targets are retired; the incident verifies (a next plan, if
    one is due, is decided like any other once the finding is seen again)."""
    steps = run_steps(inc, p)
    after = inc.with_(
        phase=Phase.VERIFYING,
        steps=steps,
        steps_done=steps,
        run_ids_done=(*inc.run_ids_done, p.run_id),
        groups_done=(*inc.groups_done, inc.current_group or ""),
        detail=p.detail,
        gate_reasons=(),
    )
    note = f"{inc.current_group or 'run'} done; verifying"
    return _step(after, "step", note, retire=inc.current_targets)


def run_steps(inc: Incident, p: RunProgress) -> tuple[StepRecord, ...]:
    """The finished runs' steps, then this run's. A zone's incident runs one plan per
    group, so each step's detail starts with the targets its run is for (`[app-5,app-6]
    ...`). A region's one run acts on the region as a whole: every target would be named
    on every step, so its steps keep their own details, which name what each touched."""
    mine = p.steps
    if len(inc.target_ids) > 1 and inc.scope is not Scope.REGION:
        names = dict(zip(inc.target_ids, inc.target_names, strict=False))
        label = ",".join(names.get(t, t) for t in inc.current_targets)
        mine = tuple(_tagged(s, label) for s in mine)
    return (*inc.steps_done, *mine)


def _tagged(step: StepRecord, group: str) -> StepRecord:
    return replace(step, detail=f"[{group}] {step.detail}".strip())


def held_reason(kill_switch: str, progress: RunProgress) -> str:
    """Why a run in flight is not moving: the kill switch, and where the run stopped."""
    done = [s.name for s in progress.steps if s.status.value in ("done", "skipped")]
    where = f" (after {done[-1]})" if done else ""
    return f"{kill_switch}; {progress.playbook.value} stops before its next step{where}"


# -- the finding, this tick ----------------------------------------------------------------


def finding_seen(
    inc: Incident,
    d: Diagnosis,
    names: Mapping[str, str],
    *,
    retired: frozenset[str],
    plan_due: bool,
    now: float,
) -> Step:
    """The incident's finding is present this tick. Before any action the record follows
    it (targets may change, a degraded instance may turn dead: decided afresh); once it
    acted, targets only grow (a zone loses its instances one by one). `plan_due`: a plan
    would run for its remaining targets; `retired`: the instances already replaced."""
    if inc.phase in (Phase.FAILED, Phase.SETTLED, Phase.ENDED):
        return _same(inc)
    if inc.acted_at is not None:
        return _grown(inc, d, names, retired=retired, plan_due=plan_due, now=now)
    if d.finding == inc.finding and d.targets == inc.target_ids:
        return _same(inc)
    after = inc.with_(
        finding=d.finding,
        severity=d.severity,
        evidence=d.evidence,
        roles=tuple(r.value for r in d.roles),
        groups=d.groups,
        target_ids=d.targets,
        target_names=tuple(names.get(t, t) for t in d.targets),
        # A changed finding is decided afresh (e.g. degraded -> dead has a playbook).
        phase=Phase.DETECTED if inc.phase is Phase.DETECTED_ONLY else inc.phase,
    )
    return _step(after, "updated", d.evidence)


def _grown(
    inc: Incident,
    d: Diagnosis,
    names: Mapping[str, str],
    *,
    retired: frozenset[str],
    plan_due: bool,
    now: float,
) -> Step:
    changes: list[IncidentChange] = []
    new = [t for t in d.targets if t not in inc.target_ids]
    if new:
        inc = inc.with_(
            target_ids=(*inc.target_ids, *new),
            target_names=(*inc.target_names, *(names.get(t, t) for t in new)),
            roles=tuple(sorted({*inc.roles, *(r.value for r in d.roles)})),
            groups=tuple(sorted({*inc.groups, *d.groups})),
            evidence=d.evidence,
        )
        more = ", ".join(names.get(t, t) for t in new)
        changes.append(IncidentChange(inc.id, inc.scope_key, "updated", f"more targets: {more}"))
    if inc.phase is Phase.VERIFYING:
        if plan_due:
            return Step(inc.with_(phase=Phase.DETECTED), tuple(changes))
        step = _settled(inc, names, retired, now)
        return Step(step.incident, (*changes, *step.changes))
    return Step(inc, tuple(changes))


def _settled(inc: Incident, names: Mapping[str, str], retired: frozenset[str], now: float) -> Step:
    """Every plan ran and the finding persists only through targets no playbook can
    recover (a replica in a lost zone): the service is recovered; the rest is left to
    the operator, and the incident stays open until the finding goes."""
    left = ", ".join(names.get(t, t) for t in inc.target_ids if t not in retired)
    detail = f"recovered; no playbook for {left}: left to the operator"
    after = inc.with_(phase=Phase.SETTLED, recovered_at=now, detail=detail)
    return _step(after, "recovered", detail)


def finding_gone(inc: Incident, *, healed: bool, now: float) -> Step:
    """The finding is gone. Ends only when the evidence says so (`healed`: every remaining
    target answers, or the API does); unknown evidence ends nothing, and a run in flight
    ends the incident itself. How it ends depends on what was done."""
    if not healed or inc.phase.in_flight or inc.phase is Phase.ENDED:
        return _same(inc)
    if inc.phase in (Phase.DETECTED_ONLY, Phase.FAILED):
        final = inc.outcome
    elif inc.acted_at is not None or inc.phase is Phase.SETTLED:
        final = IncidentOutcome.RECOVERED
    else:
        final = IncidentOutcome.CLEARED
    assert final is not None
    recovered = final is IncidentOutcome.RECOVERED
    after = inc.with_(
        phase=Phase.ENDED,
        final=final,
        closed_at=now,
        recovered_at=now if recovered and inc.recovered_at is None else inc.recovered_at,
    )
    return _step(after, final.value, inc.finding)


# -- decisions -----------------------------------------------------------------------------


def decided(
    inc: Incident, plans: tuple[Plan, ...], decision: Decision, *, acts: bool, now: float
) -> Step:
    """The gates' decision on the incident's next plan (its first, or a zone's next
    group). Acting submits `plans[0]`; anything holding it is recorded with every reason,
    never as a failure."""
    if not plans and inc.acted_at is not None:
        return Step(inc.with_(phase=Phase.VERIFYING))  # nothing left to run: verify
    if decision.act and not acts:
        why = "no playbook runner configured: would start " + plans[0].playbook.value
        return _held(inc, plans, IncidentOutcome.DETECTED_ONLY, (why,), now)
    if decision.act:
        return _submitted(_with_plans(inc, plans), plans[0], now)
    assert decision.outcome is not None
    return _held(inc, plans, decision.outcome, decision.reasons, now)


def _held(
    inc: Incident,
    plans: tuple[Plan, ...],
    outcome: IncidentOutcome,
    reasons: tuple[str, ...],
    now: float,
) -> Step:
    phase = _HELD_BY[outcome]
    if inc.phase is phase and inc.gate_reasons == reasons:
        return _same(inc)
    after = _with_plans(inc, plans).with_(
        phase=phase,
        gate_reasons=reasons,
        gate_history=(*inc.gate_history, GateEntry(now, reasons)),
    )
    return _step(after, outcome.value, "; ".join(reasons))


def _submitted(inc: Incident, plan: Plan, now: float) -> Step:
    after = inc.with_(
        phase=Phase.ACTING,
        acted_at=inc.acted_at or now,
        submitted_at=now,
        current_group=plan.group,
        current_targets=plan.targets,
        gate_reasons=(),
    )
    return _step(after, "acting", f"{plan.playbook.value} for {plan.group}", submit=plan)


def refused(inc: Incident, plan: Plan, error: str) -> Step:
    """The runner refused the plan (say, a playbook it does not have): nothing ran."""
    detail = f"the runner refused {plan.playbook.value}: {error}"
    return _step(inc.with_(phase=Phase.FAILED, detail=detail), "failed", detail)


def _with_plans(inc: Incident, plans: tuple[Plan, ...]) -> Incident:
    """The playbooks an incident will run. Before any action they follow the plans (a
    changed finding may change them); once it acted, the ones it ran stay listed."""
    names = tuple(p.playbook for p in plans)
    if inc.acted_at is None:
        return inc.with_(playbook=names[0] if names else None, playbooks=names)
    return inc.with_(
        playbook=inc.playbook or (names[0] if names else None),
        playbooks=tuple(dict.fromkeys((*inc.playbooks, *names))),
    )


# -- the operator --------------------------------------------------------------------------


def approvable(inc: Incident, approval_prefix: str) -> bool:
    """Waiting for an approval that nobody gave yet (other gates may hold it too)."""
    waiting = inc.phase in DECIDABLE and inc.approved_at is None
    return waiting and any(r.startswith(approval_prefix) for r in inc.gate_reasons)


def approved(inc: Incident, by: str, now: float) -> Incident:
    entry = GateEntry(now, (f"approved by {by}",))
    return inc.with_(approved_at=now, updated_at=now, gate_history=(*inc.gate_history, entry))


def replaces(inc: Incident, retired: frozenset[str]) -> bool:
    """Did (or does) this incident's run replace instances? A failed run that retired
    none of its targets did not."""
    failed = inc.outcome is IncidentOutcome.FAILED
    return not failed or any(t in retired for t in inc.target_ids)


__all__ = [
    "DECIDABLE",
    "IncidentChange",
    "Step",
    "approvable",
    "approved",
    "decided",
    "finding_gone",
    "finding_seen",
    "held_reason",
    "opened",
    "refused",
    "replaces",
    "run_progress",
    "run_steps",
]
