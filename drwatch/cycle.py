"""One tick: snapshot -> assess -> the incident state machine -> decide -> runner.

The tick loads the open incidents once, applies the lifecycle's pure transitions
(drwatch/lifecycle.py) to what it saw, saves the incidents that changed (one
transaction), then submits the plans the gates allowed: an incident's record says
"acting" on disk before its run can make a side effect. The daemon awaits `run_tick`,
whose writes go through the IncidentWriter's thread, so a slow fsync never stalls the
probes; `tick` does the same with the writes on the caller's thread (tests, tools).
The runner owns the playbook tasks; the cycle only submits plans and reads progress.
The caller (the daemon) logs `report.summary` once per change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from drwatch import lifecycle
from drwatch.assess import Assessment, RulesConfig, assess
from drwatch.assess.regions import serving_regions
from drwatch.assess.views import BootWatch, view
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.decide import GateInput, decide, plans_for, utc_hm
from drwatch.decide.gates import APPROVAL_PREFIX, pause_reason
from drwatch.decide.rto import RtoOverdue, RtoPolicy, rto_overdue
from drwatch.decide.summary import summarise
from drwatch.errors import DrwatchError
from drwatch.incidents import IncidentStore, Retirement, Writes, new_incident_id
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
    """One tick's working set: the open incidents and retired instances (loaded once),
    what changed, the plans to submit once saved, and the writes not yet made."""

    def __init__(self, store: IncidentStore, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.loaded = {i.id: i for i in store.open_incidents()}
        self.incidents = dict(self.loaded)
        self.retired = set(store.retired())
        self.changes: list[IncidentChange] = []
        self.to_submit: list[tuple[str, Plan]] = []
        self.started: list[Plan] = []
        self.retirements: list[Retirement] = []
        self.names = {i.id: i.name for i in snapshot.fleet}

    def apply(self, step: Step, now: float) -> Incident:
        inc = step.incident
        if step.retire:
            self.retirements.append(Retirement(step.retire, inc.id, now))
            self.retired.update(step.retire)
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

    def writes(self, now: float) -> Writes:
        """The incidents that changed since the last call, and the retirements; from here
        on they count as saved."""
        saved, expected = [], {}
        for iid, inc in list(self.incidents.items()):
            base = self.loaded.get(iid)
            if inc != base:
                changed = inc.with_(updated_at=now)
                self.loaded[iid] = self.incidents[iid] = changed
                saved.append(changed)
                if base is not None:
                    expected[iid] = base.updated_at
        out = Writes(tuple(saved), tuple(self.retirements), expected)
        self.retirements.clear()
        return out

    def conflicted(self, store: IncidentStore, skipped: frozenset[str]) -> None:
        """Records the store kept because they changed meanwhile (an approval): take the
        stored ones, and submit nothing for them this tick."""
        for iid in skipped:
            stored = store.get(iid)
            if stored is not None:
                self.loaded[iid] = self.incidents[iid] = stored
        self.to_submit = [(iid, plan) for iid, plan in self.to_submit if iid not in skipped]

    def open(self) -> list[Incident]:
        return sorted(
            (i for i in self.incidents.values() if i.is_open), key=lambda i: (i.opened_at, i.id)
        )


AsyncWrite = Callable[[Writes], Awaitable[frozenset[str]]]


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
        regions: Sequence[str] = (),
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
        """One round, its writes made on this thread (tests and tools; the daemon awaits
        `run_tick`)."""
        t, result = self._prepare(snapshot, now)
        t.conflicted(self.store, self.store.write(t.writes(now)))
        self._launch(t, now)
        t.conflicted(self.store, self.store.write(t.writes(now)))
        return self._report(t, result, now)

    async def run_tick(self, snapshot: Snapshot, now: float, write: AsyncWrite) -> TickReport:
        """One round, its writes awaited through `write` (the IncidentWriter's thread): the
        loop runs the probes while the disk syncs. The plans are submitted only once the
        incidents that say "acting" are on disk."""
        t, result = self._prepare(snapshot, now)
        t.conflicted(self.store, await write(t.writes(now)))
        self._launch(t, now)
        t.conflicted(self.store, await write(t.writes(now)))
        return self._report(t, result, now)

    def _prepare(self, snapshot: Snapshot, now: float) -> tuple[Tick, Assessment]:
        """Every transition of the tick, in memory: follow runs, open, follow and end
        incidents, decide. Writes nothing; submits nothing."""
        # A role heard is kept even if the tick fails (written through, on change only).
        self.roles.observe(snapshot)
        t = Tick(self.store, self.boots.apply(snapshot))
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
        serving = serving_regions(t.snapshot, self.roles.known(), self.regions)
        result = assess(t.snapshot, now, self.rules, frozenset(t.retired), serving)
        if result.watcher_impaired is None:
            present = self._findings(t, result, now)
            self._decide(t, present, now)
        return t, result

    def _launch(self, t: Tick, now: float) -> None:
        """Submit the plans the gates allowed (their incidents are saved as acting); a
        plan the runner refuses fails its incident."""
        for incident_id, plan in t.to_submit:
            try:
                self.runner.submit(plan)
            except DrwatchError as err:
                t.apply(lifecycle.refused(t.incidents[incident_id], plan, str(err)), now)
                continue
            t.started.append(plan)
        t.to_submit.clear()

    def _findings(self, t: Tick, result: Assessment, now: float) -> frozenset[str]:
        """Open, follow and end incidents from this tick's findings; returns the scope keys
        whose finding is present (or whose targets left the fleet): only those are decided."""
        retired = frozenset(t.retired)
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
            if _left_fleet(inc, t.snapshot, retired):
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
        retired = frozenset(t.retired)
        in_flight = sum(1 for i in t.open() if i.phase.in_flight)
        for inc in t.open():
            if inc.scope_key not in present or inc.phase not in lifecycle.DECIDABLE:
                continue
            plans = self._plans(inc, t.snapshot, retired)
            gate = self._gate_input(inc, plans, t, now=now, active=in_flight + len(t.to_submit))
            step = lifecycle.decided(inc, plans, decide(gate), acts=self.runner.acts, now=now)
            t.apply(step, now)
            if step.submit is not None:
                # Submitted by _launch, once the record saying "acting" is on disk.
                t.to_submit.append((inc.id, step.submit))

    def _plans(
        self, inc: Incident, snapshot: Snapshot, retired: frozenset[str]
    ) -> tuple[Plan, ...]:
        return plans_for(inc, snapshot, self.rules, retired, self.roles.known())

    def _gate_input(
        self, inc: Incident, plans: tuple[Plan, ...], t: Tick, *, now: float, active: int
    ) -> GateInput:
        retired = frozenset(t.retired)
        recent = _acted_since(
            self.store.acted_since(now - self._lookback()), t, now - self._lookback()
        )
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


def _acted_since(stored: list[Incident], t: Tick, since: float) -> tuple[Incident, ...]:
    """The incidents acting since `since`: the store's, as this tick has them now (its
    records are newer), and those this tick set acting (not saved until it ends)."""
    by_id = {i.id: t.incidents.get(i.id, i) for i in stored}
    for inc in t.incidents.values():
        if inc.acted_at is not None and inc.acted_at >= since:
            by_id.setdefault(inc.id, inc)
    return tuple(sorted(by_id.values(), key=lambda i: (i.acted_at or 0.0, i.id)))


def _left_fleet(inc: Incident, snapshot: Snapshot, retired: frozenset[str]) -> bool:
    """Every target left the fleet and some are not replaced yet. Targets all replaced
    (a region failover's, restarted while that region's API is down) have nothing due."""
    gone = all(snapshot.fleet.get(t) is None for t in inc.target_ids)
    return bool(inc.target_ids) and gone and not all(t in retired for t in inc.target_ids)


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
