"""The incident state machine, transition by transition: a table of cases covering every
phase it can be in and every phase it can move to, with the change each one records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from drwatch import lifecycle
from drwatch.decide.gates import Decision
from drwatch.lifecycle import Step
from drwatch.model import Plan, PlaybookName, RunOutcome, RunProgress, StepRecord, StepStatus
from drwatch.model.findings import Diagnosis, Finding
from drwatch.model.fleet import Role
from drwatch.model.incident import Incident, IncidentOutcome, IncidentState, Phase

NOW = 1_795_701_600.0
NAMES = {"i-3": "app-3", "i-4": "app-4", "i-5": "app-5"}
STOPPED = Diagnosis(
    Finding.INSTANCE_STOPPED,
    key="instance:i-3",
    region="us-east-1",
    zone="us-east-1b",
    roles=(Role.APP_SERVER,),
    groups=("app",),
    targets=("i-3",),
    evidence="app-3: provider says stopped",
)
ZONE = Diagnosis(
    Finding.ZONE_OUTAGE,
    key="zone:us-east-1b",
    region="us-east-1",
    zone="us-east-1b",
    roles=(Role.APP_SERVER,),
    groups=("app",),
    targets=("i-3", "i-4"),
    evidence="provider reports us-east-1b impaired; 2/2 instance(s) lost",
)
PLAN = Plan("inc-1", PlaybookName.APP_REPLACE, "us-east-1", "us-east-1b", "app", ("i-3",))
ACT = Decision(True, None, ())
PAUSED = Decision(False, IncidentOutcome.BLOCKED, ("paused: by alice at 13:50Z",))
APPROVAL = Decision(False, IncidentOutcome.AWAITING_APPROVAL, ("approval required for zone",))
NOTHING = Decision(False, IncidentOutcome.DETECTED_ONLY, ("detect only: never acted on",))


def opened(d: Diagnosis = STOPPED) -> Incident:
    return lifecycle.opened(d, "inc-1", NAMES, NOW - 60).incident


def at(phase: Phase, d: Diagnosis = STOPPED, **kw: object) -> Incident:
    """An incident in `phase`; acting phases have acted and run `PLAN`."""
    acted = phase in (Phase.ACTING, Phase.HELD, Phase.VERIFYING, Phase.FAILED, Phase.SETTLED)
    base = opened(d).with_(phase=phase)
    if acted:
        base = base.with_(
            acted_at=NOW - 50,
            submitted_at=NOW - 50,
            current_group="app",
            current_targets=("i-3",),
            playbook=PlaybookName.APP_REPLACE,
            playbooks=(PlaybookName.APP_REPLACE,),
        )
    return base.with_(**kw)


def run(outcome: RunOutcome, *steps: tuple[str, StepStatus], run_id: str = "r1") -> RunProgress:
    return RunProgress(
        run_id,
        "inc-1",
        PlaybookName.APP_REPLACE,
        outcome,
        steps=tuple(StepRecord(n, s, NOW - 40) for n, s in steps),
        detail="launch refused" if outcome is RunOutcome.FAILED else "",
    )


LAUNCHING = run(RunOutcome.RUNNING, ("launch", StepStatus.RUNNING))
LAUNCHED = run(RunOutcome.RUNNING, ("launch", StepStatus.DONE))
Transition = Callable[[Incident], Step]


def decided(decision: Decision, plans: tuple[Plan, ...] = (PLAN,), acts: bool = True) -> Transition:
    return lambda inc: lifecycle.decided(inc, plans, decision, acts=acts, now=NOW)


def progress(p: RunProgress | None, held_by: str | None = None) -> Transition:
    return lambda inc: lifecycle.run_progress(inc, p, held_by=held_by, verify_window=120.0, now=NOW)


def seen(d: Diagnosis, plan_due: bool = False) -> Transition:
    return lambda inc: lifecycle.finding_seen(
        inc, d, NAMES, retired=frozenset({"i-3"}), plan_due=plan_due, now=NOW
    )


def gone(healed: bool = True) -> Transition:
    return lambda inc: lifecycle.finding_gone(inc, healed=healed, now=NOW)


@dataclass(frozen=True)
class Case:
    id: str
    before: Incident
    transition: Transition
    phase: Phase
    change: str | None  # the change recorded; None: nothing changed
    check: Callable[[Step], bool] = lambda _s: True


CASES = [
    # detected: decided at once
    Case("detected, gates pass: acting, plan submitted", at(Phase.DETECTED), decided(ACT),
         Phase.ACTING, "acting", lambda s: s.submit == PLAN and s.incident.acted_at == NOW),
    Case("detected, paused: blocked with the reason", at(Phase.DETECTED), decided(PAUSED),
         Phase.BLOCKED, "blocked", lambda s: s.incident.gate_reasons == PAUSED.reasons),
    Case("detected, approval only: awaiting approval", at(Phase.DETECTED), decided(APPROVAL),
         Phase.AWAITING_APPROVAL, "awaiting_approval"),
    Case("detected, nothing to run: detected only", at(Phase.DETECTED), decided(NOTHING, ()),
         Phase.DETECTED_ONLY, "detected_only"),
    Case("detected, gates pass but no runner: detected only, saying what it would run",
         at(Phase.DETECTED), decided(ACT, acts=False), Phase.DETECTED_ONLY, "detected_only",
         lambda s: s.incident.gate_reasons[0].endswith("would start app_server.replace")),
    Case("acted, next plan due but none left: verifying",
         at(Phase.DETECTED, acted_at=NOW - 50), decided(ACT, ()), Phase.VERIFYING, None),
    # blocked and awaiting approval: re-decided every tick
    Case("blocked, same reasons: nothing recorded", at(Phase.BLOCKED,
         gate_reasons=PAUSED.reasons), decided(PAUSED), Phase.BLOCKED, None),
    Case("blocked, gates pass: acting", at(Phase.BLOCKED), decided(ACT), Phase.ACTING, "acting"),
    Case("blocked mid zone recovery, gates pass: acting, earlier playbooks kept",
         at(Phase.BLOCKED, ZONE, acted_at=NOW - 50, playbook=PlaybookName.LB_FAILOVER_EIP,
            playbooks=(PlaybookName.LB_FAILOVER_EIP,)), decided(ACT), Phase.ACTING, "acting",
         lambda s: s.incident.playbooks == (PlaybookName.LB_FAILOVER_EIP, PlaybookName.APP_REPLACE)
         and s.incident.acted_at == NOW - 50),
    Case("awaiting approval, approved: acting", at(Phase.AWAITING_APPROVAL, approved_at=NOW),
         decided(ACT), Phase.ACTING, "acting"),
    Case("awaiting approval, now paused too: blocked", at(Phase.AWAITING_APPROVAL),
         decided(PAUSED), Phase.BLOCKED, "blocked"),
    # acting and held: the run in flight
    Case("acting, a step moves on: step recorded", at(Phase.ACTING), progress(LAUNCHING),
         Phase.ACTING, "step"),
    Case("acting, paused: held before its next step, saying where",
         at(Phase.ACTING), progress(LAUNCHED, held_by="paused: by alice at 13:50Z"),
         Phase.HELD, "blocked",
         lambda s: s.incident.gate_reasons == ("paused: by alice at 13:50Z; app_server.replace "
                                               "stops before its next step (after launch)",)
         and s.incident.outcome is IncidentOutcome.BLOCKED
         and s.incident.state is IncidentState.ACTING),
    Case("held, resumed: acting again", at(Phase.HELD, gate_reasons=("paused",)),
         progress(LAUNCHED), Phase.ACTING, "acting", lambda s: s.incident.gate_reasons == ()),
    Case("acting, run succeeded: verifying, its targets retired", at(Phase.ACTING),
         progress(run(RunOutcome.SUCCEEDED, ("launch", StepStatus.DONE))), Phase.VERIFYING,
         "step", lambda s: s.retire == ("i-3",) and s.incident.run_ids_done == ("r1",)),
    Case("held, run succeeded (its last step was in flight): verifying",
         at(Phase.HELD, gate_reasons=("paused",)),
         progress(run(RunOutcome.SUCCEEDED, ("launch", StepStatus.DONE))), Phase.VERIFYING,
         "step", lambda s: s.incident.gate_reasons == ()),
    Case("acting, run failed: failed with the runner's word", at(Phase.ACTING),
         progress(run(RunOutcome.FAILED, ("launch", StepStatus.FAILED))), Phase.FAILED,
         "failed", lambda s: s.incident.detail == "launch refused"),
    Case("acting, the runner shows nothing yet, within the verify window: unchanged",
         at(Phase.ACTING, submitted_at=NOW - 60), progress(None), Phase.ACTING, None),
    Case("acting, the runner shows nothing past the verify window: failed",
         at(Phase.ACTING, submitted_at=NOW - 600), progress(None), Phase.FAILED, "failed"),
    Case("acting, the runner still shows the previous run: as nothing",
         at(Phase.ACTING, submitted_at=NOW - 600, run_ids_done=("r1",)),
         progress(LAUNCHED), Phase.FAILED, "failed"),
    Case("acting, the runner refuses the plan: failed, nothing ran", at(Phase.ACTING),
         lambda inc: lifecycle.refused(inc, PLAN, "no such playbook"), Phase.FAILED, "failed",
         lambda s: s.incident.detail == "the runner refused app_server.replace: no such playbook"),
    # the finding, seen again
    Case("verifying, finding persists with a plan due: detected (decided this tick)",
         at(Phase.VERIFYING, ZONE), seen(ZONE, plan_due=True), Phase.DETECTED, None),
    Case("verifying, finding persists, nothing left to run: settled, left to the operator",
         at(Phase.VERIFYING, ZONE), seen(ZONE), Phase.SETTLED, "recovered",
         lambda s: s.incident.detail == "recovered; no playbook for app-4: left to the operator"
         and s.incident.recovered_at == NOW and s.incident.outcome is IncidentOutcome.RECOVERED),
    Case("acting, the zone loses one more instance: it joins the targets",
         at(Phase.ACTING, ZONE), seen(replace(ZONE, targets=("i-3", "i-4", "i-5"))),
         Phase.ACTING, "updated", lambda s: s.incident.target_names[-1] == "app-5"),
    Case("detected only, same finding: unchanged", at(Phase.DETECTED_ONLY), seen(STOPPED),
         Phase.DETECTED_ONLY, None),
    Case("detected only, another finding (degraded turned dead): decided afresh",
         at(Phase.DETECTED_ONLY, finding=Finding.AGENT_DOWN), seen(STOPPED), Phase.DETECTED,
         "updated", lambda s: s.incident.cause is Finding.INSTANCE_STOPPED),
    Case("blocked before acting, targets change: the record follows the finding",
         at(Phase.BLOCKED, ZONE, target_ids=("i-3",)), seen(ZONE), Phase.BLOCKED, "updated",
         lambda s: s.incident.target_ids == ("i-3", "i-4")),
    Case("failed, finding persists: unchanged (not retried)", at(Phase.FAILED), seen(STOPPED),
         Phase.FAILED, None),
    Case("settled, finding persists: unchanged", at(Phase.SETTLED), seen(STOPPED),
         Phase.SETTLED, None),
    # the finding gone
    Case("detected, gone but not healed (unknown): unchanged", at(Phase.DETECTED),
         gone(healed=False), Phase.DETECTED, None),
    Case("blocked before any action, healed: cleared", at(Phase.BLOCKED), gone(),
         Phase.ENDED, "cleared", lambda s: s.incident.outcome is IncidentOutcome.CLEARED),
    Case("awaiting approval, healed: cleared", at(Phase.AWAITING_APPROVAL), gone(),
         Phase.ENDED, "cleared"),
    Case("detected only, healed: ended detected only", at(Phase.DETECTED_ONLY), gone(),
         Phase.ENDED, "detected_only"),
    Case("failed, healed: ended failed", at(Phase.FAILED), gone(), Phase.ENDED, "failed"),
    Case("verifying, healed: recovered", at(Phase.VERIFYING), gone(), Phase.ENDED,
         "recovered", lambda s: (s.incident.recovered_at, s.incident.closed_at) == (NOW, NOW)),
    Case("settled, healed: recovered, keeping when it recovered", at(Phase.SETTLED,
         recovered_at=NOW - 5), gone(), Phase.ENDED, "recovered",
         lambda s: s.incident.recovered_at == NOW - 5),
    Case("blocked mid zone recovery (paused), healed: recovered, not cleared",
         at(Phase.BLOCKED, ZONE, acted_at=NOW - 50), gone(), Phase.ENDED, "recovered"),
    Case("acting, healed: the run ends it, not the finding", at(Phase.ACTING), gone(),
         Phase.ACTING, None),
    Case("held, healed: unchanged", at(Phase.HELD), gone(), Phase.HELD, None),
    Case("ended: nothing moves it", at(Phase.ENDED, final=IncidentOutcome.CLEARED), gone(),
         Phase.ENDED, None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_transition(case: Case) -> None:
    """From its phase, on what the tick saw, the incident moves to the expected phase and
    records exactly the expected change (or none)."""
    step = case.transition(case.before)
    assert step.incident.phase is case.phase
    assert [c.change for c in step.changes][-1:] == ([case.change] if case.change else [])
    if case.change is None:
        assert step.incident == case.before or step.incident.phase is not case.before.phase
    assert case.check(step)


def test_every_phase_is_left_and_reached_in_the_table() -> None:
    """The table covers every phase as a starting point and as a destination."""
    assert {c.before.phase for c in CASES} == set(Phase)
    assert {c.phase for c in CASES} == set(Phase)


def test_opening_records_the_cause() -> None:
    """A new incident is detected, with its finding and evidence kept as its cause."""
    step = lifecycle.opened(STOPPED, "inc-9", NAMES, NOW)
    inc = step.incident
    assert (inc.phase, inc.state, inc.outcome) == (Phase.DETECTED, IncidentState.OPEN, None)
    assert (inc.cause, inc.opened_evidence, inc.target_names) == (
        Finding.INSTANCE_STOPPED,
        STOPPED.evidence,
        ("app-3",),
    )
    assert [c.change for c in step.changes] == ["opened"]
