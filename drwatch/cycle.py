"""One tick: snapshot -> assess -> incidents -> decide -> runner, returning a report.

The tick is synchronous and short (SQLite writes of a few rows); it never awaits. The
runner owns the playbook tasks; the cycle only submits plans and reads progress.
The caller (the daemon) logs `report.summary` once per change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from drwatch.assess import Assessment, RulesConfig, assess
from drwatch.assess.regions import serving_regions
from drwatch.assess.views import view
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.decide import GateInput, decide, plans_for, utc_hm
from drwatch.decide.gates import APPROVAL_PREFIX
from drwatch.decide.summary import summarise
from drwatch.errors import DrwatchError
from drwatch.incidents import IncidentStore, new_incident_id
from drwatch.logs import get_logger
from drwatch.model.findings import Diagnosis, Severity
from drwatch.model.incident import GateEntry, Incident, IncidentOutcome, IncidentState
from drwatch.model.observation import Layer
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress, Scope, StepRecord
from drwatch.model.snapshot import Snapshot
from drwatch.roles import RoleMemory

log = get_logger(component="cycle")

PAUSED_KEY = "paused"
PAUSE_NOTE_KEY = "pause_note"


class Runner(Protocol):
    """The seam to the playbook runner (drwatch/act implements it)."""

    def submit(self, plan: Plan) -> None:
        """Start running `plan` (in a task the runner owns); returns at once. Its progress
        should show the new run at once. May raise DrwatchError when it cannot run it.
        The daemon resumes unfinished runs (from the runner's journal) before the first
        tick, so that an incident left `acting` by a crash finds its run again."""

    def progress(self, incident_id: str) -> RunProgress | None:
        """The latest run's progress for this incident, or None when there is none."""

    def active(self) -> int:
        """How many runs are in flight."""


class NullRunner:
    """No playbooks: every incident is detected only."""

    def submit(self, plan: Plan) -> None:
        raise DrwatchError(f"no playbook runner: cannot run {plan.playbook.value}")

    def progress(self, incident_id: str) -> RunProgress | None:
        return None

    def active(self) -> int:
        return 0


class WatcherState(StrEnum):
    OK = "ok"
    WARMING_UP = "warming_up"
    IMPAIRED = "impaired"
    PAUSED = "paused"


class IncidentNotFoundError(DrwatchError):
    pass


class NotAwaitingApprovalError(DrwatchError):
    pass


@dataclass(frozen=True, slots=True)
class IncidentChange:
    incident_id: str
    scope_key: str
    change: str  # opened | updated | acting | blocked | awaiting_approval | detected_only |
    #              recovered | failed | cleared | closed | step
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TickReport:
    at: float
    watcher_state: WatcherState
    watcher_reason: str
    summary: str
    assessment: Assessment
    changes: tuple[IncidentChange, ...] = ()
    plans_started: tuple[Plan, ...] = ()
    gate_reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    open_incidents: tuple[Incident, ...] = ()
    dry_run: bool = False
    paused: bool = False

    @property
    def findings(self) -> tuple[Diagnosis, ...]:
        return self.assessment.diagnoses


_SEVERITY_RANK = {Severity.OUTAGE: 0, Severity.ALERT: 1}


def primary_by_key(diagnoses: tuple[Diagnosis, ...]) -> dict[str, Diagnosis]:
    """One diagnosis per scope key: the most severe; among equals, the first listed."""
    out: dict[str, Diagnosis] = {}
    for d in diagnoses:
        best = out.get(d.key)
        if best is None or _SEVERITY_RANK[d.severity] < _SEVERITY_RANK[best.severity]:
            out[d.key] = d
    return out


class Cycle:
    """Holds the policy, the incident store and the runner; `tick` does one round."""

    def __init__(
        self,
        policy: PolicyConfig,
        timing: TimingConfig,
        incidents_store: IncidentStore,
        runner: Runner,
        started_at: float,
        *,
        roles: RoleMemory | None = None,
        regions: Sequence[str] = (),
    ) -> None:
        self.policy = policy
        self.rules = RulesConfig.from_config(policy, timing)
        self.store = incidents_store
        self.runner = runner
        self.started_at = started_at
        self.can_act = not isinstance(runner, NullRunner)
        # The database role each instance last reported: a lost host reports nothing, and
        # a lost replica must not be "recovered" as a primary. Kept in the store, so it
        # also holds for hosts lost while drwatch itself was down.
        self.roles = roles if roles is not None else RoleMemory(incidents_store)
        # The configured regions, for the serving-region model (drwatch.assess.regions).
        self.regions = tuple(regions)

    # -- operator controls ------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.policy.paused or self.store.get_control(PAUSED_KEY) == "1"

    def pause_note(self) -> str:
        if self.policy.paused:
            return "kill switch in the config (policy.paused)"
        return self.store.get_control(PAUSE_NOTE_KEY) or ""

    def pause(self, now: float, by: str = "api") -> None:
        self.store.set_control(PAUSED_KEY, "1")
        self.store.set_control(PAUSE_NOTE_KEY, f"by {by} at {utc_hm(now)}")
        log.info("watcher.paused", by=by)

    def resume(self, now: float, by: str = "api") -> bool:
        """Lift the operator's pause; returns whether drwatch is now unpaused (the config's
        kill switch, policy.paused, stays in force until the config changes)."""
        self.store.set_control(PAUSED_KEY, "0")
        self.store.set_control(PAUSE_NOTE_KEY, "")
        log.info("watcher.resumed", by=by, at=now, still_paused_by_config=self.policy.paused)
        return not self.paused

    def approve(self, incident_id: str, now: float, by: str = "api") -> Incident:
        inc = self.store.get(incident_id)
        if inc is None:
            raise IncidentNotFoundError(f"no incident {incident_id}")
        waiting = inc.is_open and inc.state is IncidentState.OPEN and inc.approved_at is None
        if not waiting or not any(r.startswith(APPROVAL_PREFIX) for r in inc.gate_reasons):
            state = "approved" if inc.approved_at else (inc.outcome or inc.state).value
            raise NotAwaitingApprovalError(
                f"incident {incident_id} is not awaiting approval ({state})"
            )
        entry = GateEntry(now, (f"approved by {by}",))
        inc = inc.with_(approved_at=now, updated_at=now, gate_history=(*inc.gate_history, entry))
        self.store.save(inc)
        log.info("incident.approved", incident=incident_id, by=by)
        return inc

    def watcher_state(self, now: float, assessment: Assessment | None = None) -> WatcherState:
        if assessment is not None and assessment.watcher_impaired is not None:
            return WatcherState.IMPAIRED
        if self.paused:
            return WatcherState.PAUSED
        if now < self.started_at + self.policy.warmup:
            return WatcherState.WARMING_UP
        return WatcherState.OK

    # -- the tick ---------------------------------------------------------------------------

    def tick(self, snapshot: Snapshot, now: float) -> TickReport:
        """One round. The store's writes form one transaction (committed early only
        before a plan is submitted)."""
        # Outside the batch: a role heard is kept even if the tick fails and rolls back.
        self.roles.observe(snapshot)
        with self.store.batch():
            return self._tick(snapshot, now)

    def _tick(self, snapshot: Snapshot, now: float) -> TickReport:
        changes: list[IncidentChange] = []
        self._follow_runs(snapshot, now, changes)
        retired = self.store.retired()
        serving = serving_regions(snapshot, self.roles.known(), self.regions)
        result = assess(snapshot, now, self.rules, retired, serving)
        started: list[Plan] = []
        watcher = result.watcher_impaired
        if watcher is None:
            present = self._reconcile(result, snapshot, now, retired, changes)
            started = self._decide_all(snapshot, now, retired, present, changes)
        open_now = tuple(self.store.open_incidents())
        report = TickReport(
            at=now,
            watcher_state=self.watcher_state(now, result),
            watcher_reason=watcher.evidence
            if watcher
            else self.pause_note()
            if self.paused
            else "",
            summary="",
            assessment=result,
            changes=tuple(changes),
            plans_started=tuple(started),
            gate_reasons={i.id: i.gate_reasons for i in open_now if i.gate_reasons},
            open_incidents=open_now,
            dry_run=self.policy.dry_run,
            paused=self.paused,
        )
        names = {i.id: i.name for i in snapshot.fleet}
        line = summarise(
            impaired_reason=watcher.evidence if watcher else None,
            started=tuple(started),
            open_incidents=open_now,
            assessment=result,
            paused=self.paused,
            names=names,
        )
        return replace(report, summary=line)

    # -- runs -------------------------------------------------------------------------------

    def _follow_runs(self, snapshot: Snapshot, now: float, changes: list[IncidentChange]) -> None:
        for inc in self.store.open_incidents():
            if inc.state is not IncidentState.ACTING or inc.run_ended_at is not None:
                continue
            progress = self.runner.progress(inc.id)
            if progress is None or progress.run_id in inc.run_ids_done:
                self._maybe_lost(inc, now, changes)
            elif progress.outcome is RunOutcome.RUNNING:
                self._running(inc, progress, now, changes)
            elif progress.outcome is RunOutcome.SUCCEEDED:
                self._succeeded(inc, progress, snapshot, now, changes)
            else:
                self._failed(inc, progress, now, changes)

    def _maybe_lost(self, inc: Incident, now: float, changes: list[IncidentChange]) -> None:
        """Submitted, but the runner shows nothing for it: allow the verify window."""
        if inc.submitted_at is not None and now - inc.submitted_at <= self.policy.verify_window:
            return
        detail = "the runner has no record of the submitted run"
        self._save_change(
            inc.with_(
                state=IncidentState.OPEN,
                outcome=IncidentOutcome.FAILED,
                run_ended_at=now,
                detail=detail,
            ),
            now,
            "failed",
            detail,
            changes,
        )

    def _running(
        self, inc: Incident, p: RunProgress, now: float, changes: list[IncidentChange]
    ) -> None:
        steps = self._steps(inc, p)
        if steps != inc.steps:
            running = next((s.name for s in reversed(steps) if s.status.value == "running"), "")
            self._save_change(inc.with_(steps=steps), now, "step", running, changes)

    def _succeeded(
        self,
        inc: Incident,
        p: RunProgress,
        snapshot: Snapshot,
        now: float,
        changes: list[IncidentChange],
    ) -> None:
        self.store.retire(inc.current_targets, inc.id, now)
        steps = self._steps(inc, p)
        inc = inc.with_(
            steps=steps,
            steps_done=steps,
            run_ids_done=(*inc.run_ids_done, p.run_id),
            groups_done=(*inc.groups_done, inc.current_group or ""),
            detail=p.detail,
        )
        remaining = plans_for(inc, snapshot, self.rules, self.store.retired(), self.roles.known())
        if remaining:
            self._submit(inc, remaining[0], now, changes)
            return
        self._save_change(
            inc.with_(run_ended_at=now), now, "step", "playbooks done; verifying", changes
        )

    def _failed(
        self, inc: Incident, p: RunProgress, now: float, changes: list[IncidentChange]
    ) -> None:
        steps = self._steps(inc, p)
        inc = inc.with_(
            steps=steps,
            state=IncidentState.OPEN,
            outcome=IncidentOutcome.FAILED,
            run_ended_at=now,
            detail=p.detail or "playbook failed",
        )
        self._save_change(inc, now, "failed", inc.detail, changes)

    def _steps(self, inc: Incident, p: RunProgress) -> tuple[StepRecord, ...]:
        """The finished runs' steps, then this run's. With several targets, each step's
        detail starts with the targets its run is for (`[app-5,app-6] ...`)."""
        mine = p.steps
        if len(inc.target_ids) > 1:
            names = dict(zip(inc.target_ids, inc.target_names, strict=False))
            label = ",".join(names.get(t, t) for t in inc.current_targets)
            mine = tuple(_tagged(s, label) for s in mine)
        return (*inc.steps_done, *mine)

    def _submit(self, inc: Incident, plan: Plan, now: float, changes: list[IncidentChange]) -> None:
        inc = inc.with_(
            state=IncidentState.ACTING,
            outcome=None,
            playbook=inc.playbook or plan.playbook,
            playbooks=tuple(dict.fromkeys((*inc.playbooks, plan.playbook))),
            acted_at=inc.acted_at or now,
            submitted_at=now,
            current_group=plan.group,
            current_targets=plan.targets,
            gate_reasons=(),
        )
        # Durable before submit: the record says "acting" before any side effect can happen.
        self._save_change(inc, now, "acting", f"{plan.playbook.value} for {plan.group}", changes)
        self.store.checkpoint()
        try:
            self.runner.submit(plan)
        except DrwatchError as err:
            # The runner refused the plan (say, a playbook it does not have): nothing ran.
            detail = f"the runner refused {plan.playbook.value}: {err}"
            failed = inc.with_(
                state=IncidentState.OPEN,
                outcome=IncidentOutcome.FAILED,
                run_ended_at=now,
                detail=detail,
            )
            self._save_change(failed, now, "failed", detail, changes)

    # -- incidents --------------------------------------------------------------------------

    def _reconcile(
        self,
        result: Assessment,
        snapshot: Snapshot,
        now: float,
        retired: frozenset[str],
        changes: list[IncidentChange],
    ) -> frozenset[str]:
        """Open, follow and end incidents; returns the scope keys whose finding is present
        (or whose targets left the fleet): only those are decided."""
        current = primary_by_key(result.incidents)
        open_by_key = {i.scope_key: i for i in self.store.open_incidents()}
        for key, d in current.items():
            inc = open_by_key.get(key)
            if inc is None:
                self._open(d, snapshot, now, changes)
            else:
                self._still(inc, d, snapshot=snapshot, now=now, retired=retired, changes=changes)
        present = set(current)
        for key, inc in open_by_key.items():
            if key in current:
                continue
            if _left_fleet(inc, snapshot, retired):
                # Terminated and dropped by discovery: not healed. The incident stays open
                # and is still decided from its record (its replacement is still due).
                present.add(key)
            elif self._healed(inc, snapshot, now, retired):
                self._gone(inc, now, changes)
        return frozenset(present)

    def _healed(
        self, inc: Incident, snapshot: Snapshot, now: float, retired: frozenset[str]
    ) -> bool:
        """The finding is gone *and* the evidence says so: every remaining target answers
        (or was replaced); for the provider API, it answers. A finding that merely became
        unknown (a restart with no observations yet, silence) ends nothing."""
        if inc.scope is Scope.PROVIDER_API:
            return view(snapshot.get(inc.region, Layer.API), now, self.rules).answering
        for t in inc.target_ids:
            if t in retired or snapshot.fleet.get(t) is None:
                continue
            agent = view(snapshot.get(t, Layer.AGENT), now, self.rules)
            app = view(snapshot.get(t, Layer.APP), now, self.rules)
            if not (agent.answering or app.answering):
                return False
        return True

    def _open(
        self, d: Diagnosis, snapshot: Snapshot, now: float, changes: list[IncidentChange]
    ) -> None:
        names = tuple(_name(snapshot, t) for t in d.targets)
        inc = Incident(
            id=new_incident_id(now),
            scope=d.scope,
            scope_key=d.key,
            finding=d.finding.value,
            severity=d.severity.value,
            region=d.region,
            zone=d.zone,
            roles=tuple(r.value for r in d.roles),
            groups=d.groups,
            target_ids=d.targets,
            target_names=names,
            opened_at=now,
            updated_at=now,
            evidence=d.evidence,
        )
        self.store.save(inc)
        changes.append(IncidentChange(inc.id, inc.scope_key, "opened", d.evidence))
        log.info(
            "incident.opened",
            incident=inc.id,
            scope=d.key,
            finding=d.finding.value,
            targets=list(names),
            evidence=d.evidence,
        )

    def _still(
        self,
        inc: Incident,
        d: Diagnosis,
        *,
        snapshot: Snapshot,
        now: float,
        retired: frozenset[str],
        changes: list[IncidentChange],
    ) -> None:
        """The finding persists. Before any action the record follows it (targets may
        change, a degraded instance may turn dead); while acting, targets only grow (a
        zone loses its instances one by one) and each new one gets its plan in turn."""
        if inc.outcome in (IncidentOutcome.FAILED, IncidentOutcome.RECOVERED):
            return
        if inc.state is IncidentState.ACTING:
            self._grow(inc, d, snapshot=snapshot, now=now, retired=retired, changes=changes)
            return
        if d.finding.value == inc.finding and d.targets == inc.target_ids:
            return
        inc = inc.with_(
            finding=d.finding.value,
            severity=d.severity.value,
            evidence=d.evidence,
            roles=tuple(r.value for r in d.roles),
            groups=d.groups,
            target_ids=d.targets,
            target_names=tuple(_name(snapshot, t) for t in d.targets),
            # A changed finding is decided afresh (e.g. degraded -> dead has a playbook).
            outcome=None if inc.outcome is IncidentOutcome.DETECTED_ONLY else inc.outcome,
        )
        self._save_change(inc, now, "updated", d.evidence, changes)

    def _grow(
        self,
        inc: Incident,
        d: Diagnosis,
        *,
        snapshot: Snapshot,
        now: float,
        retired: frozenset[str],
        changes: list[IncidentChange],
    ) -> None:
        new = [t for t in d.targets if t not in inc.target_ids]
        if new:
            ids = (*inc.target_ids, *new)
            inc = inc.with_(
                target_ids=ids,
                target_names=(*inc.target_names, *(_name(snapshot, t) for t in new)),
                roles=tuple(sorted({*inc.roles, *(r.value for r in d.roles)})),
                groups=tuple(sorted({*inc.groups, *d.groups})),
                evidence=d.evidence,
            )
            self._save_change(
                inc, now, "updated", f"more targets: {_names(snapshot, new)}", changes
            )
        if inc.run_ended_at is None:
            return  # a run is in flight; the next plan waits for it
        remaining = plans_for(inc, snapshot, self.rules, retired, self.roles.known())
        if remaining:
            self._submit(inc.with_(run_ended_at=None), remaining[0], now, changes)
        else:
            self._settle(inc, snapshot, retired, now, changes)

    def _settle(
        self,
        inc: Incident,
        snapshot: Snapshot,
        retired: frozenset[str],
        now: float,
        changes: list[IncidentChange],
    ) -> None:
        """Every plan ran and the finding persists only through targets no playbook can
        recover (a replica in a lost zone): the service is recovered; the rest is left
        to the operator, and the incident stays open until the finding goes."""
        left = [t for t in inc.target_ids if t not in retired]
        detail = f"recovered; no playbook for {_names(snapshot, left)}: left to the operator"
        inc = inc.with_(
            state=IncidentState.OPEN,
            outcome=IncidentOutcome.RECOVERED,
            recovered_at=now,
            detail=detail,
        )
        self._save_change(inc, now, "recovered", detail, changes)

    def _gone(self, inc: Incident, now: float, changes: list[IncidentChange]) -> None:
        """The finding is gone and the targets answer. How it ends depends on what was done."""
        if inc.state is IncidentState.ACTING and inc.outcome is None:
            if inc.run_ended_at is None:
                return  # a run is in flight: it ends the incident, not the finding
            self._close(inc, IncidentOutcome.RECOVERED, now, changes, recovered=True)
            return
        if inc.outcome is IncidentOutcome.RECOVERED:
            self._close(inc, inc.outcome, now, changes, recovered=True)
            return
        if inc.outcome in (IncidentOutcome.DETECTED_ONLY, IncidentOutcome.FAILED):
            self._close(inc, inc.outcome, now, changes)
            return
        self._close(inc, IncidentOutcome.CLEARED, now, changes)

    def _close(
        self,
        inc: Incident,
        outcome: IncidentOutcome,
        now: float,
        changes: list[IncidentChange],
        *,
        recovered: bool = False,
    ) -> None:
        inc = inc.with_(
            state=IncidentState.ENDED,
            outcome=outcome,
            closed_at=now,
            recovered_at=now if recovered else inc.recovered_at,
        )
        self._save_change(inc, now, outcome.value, inc.finding, changes)
        log.info("incident.closed", incident=inc.id, scope=inc.scope_key, outcome=outcome.value)

    def _save_change(
        self, inc: Incident, now: float, change: str, detail: str, changes: list[IncidentChange]
    ) -> None:
        self.store.save(inc.with_(updated_at=now))
        changes.append(IncidentChange(inc.id, inc.scope_key, change, detail))

    # -- decisions --------------------------------------------------------------------------

    def _decide_all(
        self,
        snapshot: Snapshot,
        now: float,
        retired: frozenset[str],
        present: frozenset[str],
        changes: list[IncidentChange],
    ) -> list[Plan]:
        started: list[Plan] = []
        acting = sum(1 for i in self.store.open_incidents() if _in_flight(i))
        for inc in self.store.open_incidents():
            if inc.scope_key not in present:
                continue  # its evidence is unknown this tick: neither ended nor decided
            if inc.state is not IncidentState.OPEN or inc.outcome in (
                IncidentOutcome.DETECTED_ONLY,
                IncidentOutcome.FAILED,
                IncidentOutcome.RECOVERED,
            ):
                continue
            plan = self._decide_one(
                inc,
                snapshot,
                now=now,
                active=acting + len(started),
                retired=retired,
                changes=changes,
            )
            if plan is not None:
                started.append(plan)
        return started

    def _decide_one(
        self,
        inc: Incident,
        snapshot: Snapshot,
        *,
        now: float,
        active: int,
        retired: frozenset[str],
        changes: list[IncidentChange],
    ) -> Plan | None:
        plans = plans_for(inc, snapshot, self.rules, retired, self.roles.known())
        gate = self._gate_input(inc, plans, snapshot, now=now, active=active, retired=retired)
        verdict = decide(gate)
        if verdict.act and not self.can_act:
            why = "no playbook runner configured: would start " + plans[0].playbook.value
            self._record(
                inc, plans, IncidentOutcome.DETECTED_ONLY, (why,), now=now, changes=changes
            )
            return None
        if verdict.act:
            inc = inc.with_(playbook=plans[0].playbook, playbooks=_playbooks(plans))
            self._submit(inc, plans[0], now, changes)
            return plans[0]
        assert verdict.outcome is not None
        self._record(inc, plans, verdict.outcome, verdict.reasons, now=now, changes=changes)
        return None

    def _lookback(self) -> float:
        return max(self.policy.cooldown, self.policy.blast_window)

    def _gate_input(
        self,
        inc: Incident,
        plans: tuple[Plan, ...],
        snapshot: Snapshot,
        *,
        now: float,
        active: int,
        retired: frozenset[str],
    ) -> GateInput:
        recent = tuple(self.store.acted_since(now - self._lookback()))
        sizes: dict[str, int] = {}
        for i in snapshot.fleet:
            if i.id not in retired:
                sizes[i.group] = sizes.get(i.group, 0) + 1
        return GateInput(
            now=now,
            started_at=self.started_at,
            policy=self.policy,
            incident=inc,
            plans=plans,
            paused=self.paused,
            pause_note=self.pause_note(),
            # Our own count of incidents in flight, or the runner's, whichever is higher.
            active_runs=max(self.runner.active(), active),
            recent=recent,
            replacing=tuple(i for i in recent if _replacing(i, retired)),
            group_of={i.id: i.group for i in snapshot.fleet},
            group_sizes=sizes,
            names={i.id: i.name for i in snapshot.fleet},
        )

    def _record(
        self,
        inc: Incident,
        plans: tuple[Plan, ...],
        outcome: IncidentOutcome,
        reasons: tuple[str, ...],
        *,
        now: float,
        changes: list[IncidentChange],
    ) -> None:
        if inc.outcome is outcome and inc.gate_reasons == reasons:
            return
        inc = inc.with_(
            outcome=outcome,
            gate_reasons=reasons,
            gate_history=(*inc.gate_history, GateEntry(now, reasons)),
            playbook=plans[0].playbook if plans else None,
            playbooks=_playbooks(plans),
        )
        self._save_change(inc, now, outcome.value, "; ".join(reasons), changes)
        log.info("incident.decided", incident=inc.id, outcome=outcome.value, reasons=list(reasons))


class SummaryLog:
    """For the daemon: log the tick's summary once per change (`tick.summary`), never
    every tick. Returns whether it logged."""

    def __init__(self) -> None:
        self._last: str | None = None

    def __call__(self, report: TickReport) -> bool:
        if report.summary == self._last:
            return False
        self._last = report.summary
        log.info(
            "tick.summary",
            summary=report.summary,
            watcher=report.watcher_state.value,
            open_incidents=len(report.open_incidents),
        )
        return True


def _replacing(inc: Incident, retired: frozenset[str]) -> bool:
    """Did (or does) this incident's run replace instances? A failed run that retired
    none of its targets did not."""
    failed = inc.outcome is IncidentOutcome.FAILED
    return not failed or any(t in retired for t in inc.target_ids)


def _left_fleet(inc: Incident, snapshot: Snapshot, retired: frozenset[str]) -> bool:
    """Every target left the fleet and some are not replaced yet. Targets all replaced
    (a region failover's, restarted while that region's API is down) have nothing due."""
    gone = all(snapshot.fleet.get(t) is None for t in inc.target_ids)
    return bool(inc.target_ids) and gone and not all(t in retired for t in inc.target_ids)


def _in_flight(inc: Incident) -> bool:
    return inc.state is IncidentState.ACTING and inc.run_ended_at is None


def _playbooks(plans: tuple[Plan, ...]) -> tuple[PlaybookName, ...]:
    return tuple(p.playbook for p in plans)


def _tagged(step: StepRecord, group: str) -> StepRecord:
    return StepRecord(
        step.name, step.status, step.started_at, step.ended_at, f"[{group}] {step.detail}".strip()
    )


def _names(snapshot: Snapshot, ids: list[str]) -> str:
    return ", ".join(_name(snapshot, t) for t in ids)


def _name(snapshot: Snapshot, instance_id: str) -> str:
    inst = snapshot.fleet.get(instance_id)
    return inst.name if inst else instance_id


__all__ = [
    "Cycle",
    "IncidentChange",
    "IncidentNotFoundError",
    "NotAwaitingApprovalError",
    "NullRunner",
    "Runner",
    "SummaryLog",
    "TickReport",
    "WatcherState",
]
