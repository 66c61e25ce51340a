"""One tick: snapshot -> assess -> the incident state machine -> decide -> runner.

The tick loads the open incidents once, applies the lifecycle's pure transitions
(drwatch/lifecycle.py) to what it saw, submits the plans the gates allow, and saves the
incidents that changed. It is synchronous and short (SQLite writes of a few rows); it
never awaits. The runner owns the playbook tasks; the cycle only submits plans and reads
progress. The caller (the daemon) logs `report.summary` once per change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from drwatch import lifecycle
from drwatch.assess import Assessment, RulesConfig, assess
from drwatch.assess.views import BootWatch, view
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.decide import GateInput, decide, plans_for, utc_hm
from drwatch.decide.gates import APPROVAL_PREFIX, pause_reason
from drwatch.decide.rto import RtoOverdue, RtoPolicy, rto_overdue
from drwatch.decide.summary import summarise
from drwatch.errors import DrwatchError
from drwatch.incidents import IncidentStore, new_incident_id
from drwatch.lifecycle import IncidentChange, Step
from drwatch.logs import get_logger
from drwatch.model.findings import Diagnosis, Severity
from drwatch.model.incident import Incident, Phase
from drwatch.model.observation import Layer
from drwatch.model.plan import Plan, RunProgress, Scope
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

    @property
    def acts(self) -> bool:
        """Whether it runs playbooks at all (NullRunner: no, every incident is detected only)."""


class NullRunner:
    """No playbooks: every incident is detected only."""

    acts = False

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
    # Open incidents past their recovery time objective (RTO watch).
    rto_overdue: tuple[RtoOverdue, ...] = ()

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


class Tick:
    """One tick's working set: the open incidents (loaded once), what changed, what
    started. `apply` takes a transition's step."""

    def __init__(self, store: IncidentStore, snapshot: Snapshot) -> None:
        self.store = store
        self.snapshot = snapshot
        self.loaded = {i.id: i for i in store.open_incidents()}
        self.incidents = dict(self.loaded)
        self.changes: list[IncidentChange] = []
        self.started: list[Plan] = []
        self.names = {i.id: i.name for i in snapshot.fleet}

    def apply(self, step: Step, now: float) -> Incident:
        inc = step.incident
        if step.retire:
            self.store.retire(step.retire, inc.id, now)
        self.incidents[inc.id] = inc
        self.changes.extend(step.changes)
        for change in step.changes:
            log.info(
                f"incident.{change.change}",
                incident=inc.id,
                scope=inc.scope_key,
                phase=inc.phase.value,
                detail=change.detail,
            )
        return inc

    def save(self, now: float, only: str | None = None) -> None:
        """Write the incidents that changed (only one of them, given `only`)."""
        for iid, inc in list(self.incidents.items()):
            if (only is None or iid == only) and inc != self.loaded.get(iid):
                saved = inc.with_(updated_at=now)
                self.loaded[iid] = self.incidents[iid] = saved
                self.store.save(saved)

    def open(self) -> list[Incident]:
        return sorted(
            (i for i in self.incidents.values() if i.is_open), key=lambda i: (i.opened_at, i.id)
        )


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
        rto: RtoPolicy | None = None,
    ) -> None:
        self.policy = policy
        self.rules = RulesConfig.from_config(policy, timing)
        self.store = incidents_store
        self.runner = runner
        self.started_at = started_at
        # The database role each instance last reported: a lost host reports nothing, and
        # a lost replica must not be "recovered" as a primary. Kept in the store, so it
        # also holds for hosts lost while drwatch itself was down.
        self.roles = roles if roles is not None else RoleMemory(incidents_store)
        self.rto = rto
        self.boots = BootWatch()

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
        if not inc.is_open or not lifecycle.approvable(inc, APPROVAL_PREFIX):
            state = "approved" if inc.approved_at else (inc.outcome or inc.state).value
            raise NotAwaitingApprovalError(
                f"incident {incident_id} is not awaiting approval ({state})"
            )
        inc = lifecycle.approved(inc, by, now)
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
        snapshot = self.boots.apply(snapshot)
        with self.store.batch():
            return self._tick(snapshot, now)

    def _tick(self, snapshot: Snapshot, now: float) -> TickReport:
        t = Tick(self.store, snapshot)
        held_by = pause_reason(self.pause_note()) if self.paused else None
        for inc in t.open():
            if inc.phase.in_flight:
                progress = self.runner.progress(inc.id)
                step = lifecycle.run_progress(
                    inc,
                    progress,
                    held_by=held_by,
                    verify_window=self.policy.verify_window,
                    now=now,
                )
                t.apply(step, now)
        result = assess(snapshot, now, self.rules, self.store.retired())
        if result.watcher_impaired is None:
            present = self._findings(t, result, now)
            self._decide(t, present, now)
        t.save(now)
        return self._report(t, result, now)

    def _findings(self, t: Tick, result: Assessment, now: float) -> frozenset[str]:
        """Open, follow and end incidents from this tick's findings; returns the scope keys
        whose finding is present (or whose targets left the fleet): only those are decided."""
        retired = self.store.retired()
        current = primary_by_key(result.incidents)
        by_key = {i.scope_key: i for i in t.open()}
        present = set(current)
        for key, d in current.items():
            inc = by_key.get(key)
            if inc is None:
                t.apply(lifecycle.opened(d, new_incident_id(now), t.names, now), now)
                continue
            due = bool(self._plans(inc, t.snapshot, retired))
            step = lifecycle.finding_seen(inc, d, t.names, retired=retired, plan_due=due, now=now)
            t.apply(step, now)
        for key, inc in by_key.items():
            if key in current:
                continue
            if _left_fleet(inc, t.snapshot):
                # Terminated and dropped by discovery: not healed. The incident stays open
                # and is still decided from its record (its replacement is still due).
                present.add(key)
                continue
            healed = self._healed(inc, t.snapshot, now, retired)
            t.apply(lifecycle.finding_gone(inc, healed=healed, now=now), now)
        return frozenset(present)

    def _healed(
        self, inc: Incident, snapshot: Snapshot, now: float, retired: frozenset[str]
    ) -> bool:
        """The finding is gone *and* the evidence says so: every remaining target answers
        (or was replaced); for the provider API, it answers. A finding that merely became
        unknown (a restart with no observations yet, silence) ends nothing."""
        if inc.scope is Scope.PROVIDER_API:
            return view(snapshot.get(inc.region, Layer.API), now, self.rules).answering
        for target in inc.target_ids:
            if target in retired or snapshot.fleet.get(target) is None:
                continue
            agent = view(snapshot.get(target, Layer.AGENT), now, self.rules)
            app = view(snapshot.get(target, Layer.APP), now, self.rules)
            if not (agent.answering or app.answering):
                return False
        return True

    # -- decisions --------------------------------------------------------------------------

    def _decide(self, t: Tick, present: frozenset[str], now: float) -> None:
        """Every plan, an incident's first or its next (a zone's next group), goes through
        decide() and every gate, in the order the incidents opened."""
        retired = self.store.retired()
        in_flight = sum(1 for i in t.open() if i.phase.in_flight)
        for inc in t.open():
            if inc.scope_key not in present or inc.phase not in lifecycle.DECIDABLE:
                continue
            plans = self._plans(inc, t.snapshot, retired)
            gate = self._gate_input(inc, plans, t, now=now, active=in_flight + len(t.started))
            step = lifecycle.decided(inc, plans, decide(gate), acts=self.runner.acts, now=now)
            after = t.apply(step, now)
            if step.submit is not None:
                self._submit(t, after, step.submit, now)

    def _submit(self, t: Tick, inc: Incident, plan: Plan, now: float) -> None:
        # Durable before submit: the record says "acting" before any side effect can happen.
        t.save(now, only=inc.id)
        self.store.checkpoint()
        try:
            self.runner.submit(plan)
        except DrwatchError as err:
            t.apply(lifecycle.refused(t.incidents[inc.id], plan, str(err)), now)
            return
        t.started.append(plan)

    def _plans(
        self, inc: Incident, snapshot: Snapshot, retired: frozenset[str]
    ) -> tuple[Plan, ...]:
        return plans_for(inc, snapshot, self.rules, retired, self.roles.known())

    def _gate_input(
        self, inc: Incident, plans: tuple[Plan, ...], t: Tick, *, now: float, active: int
    ) -> GateInput:
        retired = self.store.retired()
        recent = tuple(self.store.acted_since(now - self._lookback()))
        # This tick's own records are newer than the store's.
        recent = tuple(t.incidents.get(i.id, i) for i in recent)
        sizes: dict[str, int] = {}
        for i in t.snapshot.fleet:
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
            replacing=tuple(i for i in recent if lifecycle.replaces(i, retired)),
            group_of={i.id: i.group for i in t.snapshot.fleet},
            group_sizes=sizes,
            names=t.names,
        )

    def _lookback(self) -> float:
        return max(self.policy.cooldown, self.policy.blast_window)

    # -- the report -------------------------------------------------------------------------

    def _report(self, t: Tick, result: Assessment, now: float) -> TickReport:
        watcher = result.watcher_impaired
        open_now = tuple(t.open())
        reason = watcher.evidence if watcher else self.pause_note() if self.paused else ""
        line = summarise(
            impaired_reason=watcher.evidence if watcher else None,
            started=tuple(t.started),
            open_incidents=open_now,
            assessment=result,
            paused=self.paused,
            names=t.names,
        )
        return TickReport(
            at=now,
            watcher_state=self.watcher_state(now, result),
            watcher_reason=reason,
            summary=line,
            assessment=result,
            changes=tuple(t.changes),
            plans_started=tuple(t.started),
            gate_reasons={i.id: i.gate_reasons for i in open_now if i.gate_reasons},
            open_incidents=open_now,
            dry_run=self.policy.dry_run,
            paused=self.paused,
            rto_overdue=rto_overdue(open_now, now, self.rto),
        )


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


def _left_fleet(inc: Incident, snapshot: Snapshot) -> bool:
    return bool(inc.target_ids) and all(snapshot.fleet.get(t) is None for t in inc.target_ids)


__all__ = [
    "Cycle",
    "IncidentChange",
    "IncidentNotFoundError",
    "NotAwaitingApprovalError",
    "NullRunner",
    "Phase",
    "Runner",
    "SummaryLog",
    "TickReport",
    "WatcherState",
]
