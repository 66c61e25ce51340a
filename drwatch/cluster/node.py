"""The daemon's side of several watchers: lead or follow, tick by tick.

Each tick the daemon asks `prepare(now)` whether this watcher acts. Every watcher first
sends the operator's commands it took (`SharedControls`) to etcd. Then:

- the leader, on the first tick of a term, pulls every shared incident into its local
  copy and resumes the unfinished runs of the shared journal (the old leader's, once:
  the runner ignores a run already in flight); each tick it applies the shared pause and
  the approvals and runs the cycle, whose writes go to etcd (fenced) before the local
  copy and before any plan is submitted (`write_through`); `settle` pushes the rest;
- a follower (or a watcher that cannot reach etcd) stops any run it was making (they
  stay `running` in the journal for the next leader), pulls the shared incidents when it
  can, and reports what it observes without deciding (`follower_report`).

`Solo` is the null side for one watcher without `[cluster]`: it always acts and shares
nothing, so the daemon's single-watcher path is the one it always had.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from drwatch.alerts.model import AlertInput
from drwatch.assess import assess
from drwatch.cluster.corroborate import Corroborated, corroborate, my_view
from drwatch.cluster.errors import (
    EtcdRefusedError,
    EtcdUnavailableError,
    NotLeaderError,
    TickNotSharedError,
)
from drwatch.cluster.etcd_store import ViewBoard
from drwatch.cluster.incidents import IncidentMirror
from drwatch.cluster.leader import Leadership, Role
from drwatch.cluster.sqlite_store import SqliteControlStore
from drwatch.cluster.store import ControlStore
from drwatch.cluster.vantage import View
from drwatch.cycle import AsyncWrite, Cycle, TickReport
from drwatch.decide import utc_hm
from drwatch.decide.summary import summarise
from drwatch.incidents import Writes
from drwatch.model.incident import Incident, Phase
from drwatch.model.snapshot import Snapshot

log = structlog.get_logger("drwatch.cluster")

_ETCD_ERRORS = (EtcdUnavailableError, EtcdRefusedError)


class Leading(Protocol):
    @property
    def state(self) -> Leadership: ...


class Resumable(Protocol):
    async def resume(self) -> int: ...
    async def aclose(self) -> None: ...


def _hm(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%SZ") if at else "?"


def not_acting_reason(lead: Leadership) -> str:
    """One line for the summary and the status page: why this watcher does not act."""
    if lead.role is Role.FOLLOWER:
        return f"follower: {lead.leader} leads since {_hm(lead.since)}"
    if lead.role is Role.UNAVAILABLE:
        return f"nobody acts: {lead.reason}"
    return f"not acting ({lead.role.value}): {lead.reason}"


@dataclass
class SharedControls:
    """The API's controls on a clustered watcher. A command is checked and applied to the
    local copy at once (the leader's kill switch holds before its next side effect), and
    queued for etcd, where the leader reads it; `flush` sends the queue every tick, so a
    command sent to a follower, or while etcd is away, reaches the leader when it can."""

    cycle: Cycle
    outbox: list[Callable[[ControlStore], Awaitable[Any]]] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return self.cycle.paused

    def pause(self, now: float, by: str = "api") -> None:
        self.cycle.pause(now, by)
        note = f"by {by} at {utc_hm(now)}"
        self.outbox.append(lambda c: c.set_pause(True, note))

    def resume(self, now: float, by: str = "api") -> bool:
        free = self.cycle.resume(now, by)
        self.outbox.append(lambda c: c.set_pause(False, ""))
        return free

    def approve(self, incident_id: str, now: float, by: str = "api") -> Incident:
        inc = self.cycle.approve(incident_id, now, by)
        self.outbox.append(lambda c: c.approve(incident_id, by, now))
        return inc

    def watcher_state(self, now: float) -> Any:
        return self.cycle.watcher_state(now)

    async def flush(self, shared: ControlStore) -> None:
        """Send the queued commands in order; what fails stays queued, in order."""
        while self.outbox:
            await self.outbox[0](shared)
            self.outbox.pop(0)


class Solo:
    """One watcher: it acts every tick and shares nothing."""

    async def prepare(self, now: float) -> bool:
        return True

    def may_act(self) -> bool:
        return True

    def not_acting(self) -> str:
        return ""

    async def settle(self, now: float) -> None:
        return None

    def status(self) -> dict[str, Any] | None:
        return None

    def corroborate(self, snapshot: Snapshot, now: float) -> Snapshot:
        return snapshot

    def write_through(self, local: AsyncWrite) -> AsyncWrite:
        return local

    def alerts(self, now: float) -> list[AlertInput]:
        return []


class ClusterNode:
    """A clustered watcher's tick-by-tick part; see the module doc."""

    def __init__(
        self,
        leading: Leading,
        cycle: Cycle,
        runner: Resumable,
        *,
        mirror: IncidentMirror,
        shared_controls: ControlStore,
        commands: SharedControls,
        vantage: Vantage | None = None,
    ) -> None:
        self.leading = leading
        self.cycle = cycle
        self.runner = runner
        self.mirror = mirror
        self.shared_controls = shared_controls
        self.local_controls = SqliteControlStore(cycle.store)
        self.commands = commands
        self.term = 0  # the term this watcher leads in, once it has taken over; 0: none
        self.shared_error = ""  # why the last exchange with etcd failed ("" if it did not)
        self.unavailable_since: float | None = None
        self.vantage = vantage
        self._views: list[View] | None = None  # None: not read this tick (etcd away)
        self._raw: Snapshot | None = None
        self.corroborated: Corroborated | None = None

    async def prepare(self, now: float) -> bool:
        """Whether this tick may decide and act (see the module doc)."""
        await self._etcd(self.commands.flush(self.shared_controls))
        await self._read_views()
        lead = self.leading.state
        self._note_availability(lead, now)
        if not lead.acting:
            await self.step_down(not_acting_reason(lead))
            await self._etcd(self.mirror.pull())
            await self._etcd(self._pull_controls())
            return False
        if self.term != lead.term:
            ok = await self._etcd(self.mirror.pull()) and await self._etcd(self._pull_controls())
            if not ok:
                return False
            resumed = await self.runner.resume()
            log.info("cluster.took_over", term=lead.term, resumed_runs=resumed)
            self.term = lead.term
            return True
        return await self._etcd(self._pull_controls())

    def may_act(self) -> bool:
        """For the runner's kill switch: this watcher took over and still leads."""
        return bool(self.term) and self.leading.state.acting

    def write_through(self, local: AsyncWrite) -> AsyncWrite:
        """The cycle's writes, to etcd first (fenced), then to `local` (the local copy):
        the cycle submits plans only once its write returns, so every incident a run is
        started for is in etcd, where the next leader finds it. A refused or failed
        share raises TickNotSharedError and writes nothing locally: the tick stops before
        it submits anything, as when the local disk refuses."""

        async def write(writes: Writes) -> frozenset[str]:
            if writes:
                if not self.may_act():
                    raise TickNotSharedError(f"tick not shared: {self.not_acting()}")
                try:
                    await self._etcd_raising(self.mirror.share(writes))
                except NotLeaderError as exc:
                    await self.step_down(str(exc))
                    raise TickNotSharedError(f"tick not shared: {exc}") from exc
                except _ETCD_ERRORS as exc:
                    raise TickNotSharedError(f"tick not shared: {exc}") from exc
            return await local(writes)

        return write

    def not_acting(self) -> str:
        return not_acting_reason(self.leading.state)

    async def settle(self, now: float) -> None:
        """After the tick: publish this watcher's view; a leader shares what it changed
        (deposed, it stops acting)."""
        await self._publish_view(now)
        if not self.term:
            return
        try:
            await self._etcd_raising(self.mirror.push(now))
            await self._etcd_raising(self.mirror.prune(now))
        except NotLeaderError as exc:
            await self.step_down(str(exc))

    async def step_down(self, why: str) -> None:
        if not self.term:
            return
        log.warning("cluster.stepped_down", term=self.term, reason=why)
        self.term = 0
        await self.runner.aclose()  # runs stay `running` in the shared journal

    # -- vantage ------------------------------------------------------------------------------

    async def _read_views(self) -> None:
        self._views = None
        if self.vantage is None:
            return
        board, views = self.vantage.board, list[View]()

        async def read() -> None:
            views.extend(await board.views())

        if await self._etcd(read()):
            self._views = views

    def corroborate(self, snapshot: Snapshot, now: float) -> Snapshot:
        """This watcher's silence, checked against the other watchers' fresh views
        (cluster.corroborate); as observed when the views could not be read."""
        self._raw = snapshot
        v = self.vantage
        if v is None or self._views is None:
            self.corroborated = None
            return snapshot
        self.corroborated = corroborate(
            snapshot,
            self._views,
            me=v.me,
            now=now,
            cfg=self.cycle.rules,
            quorum=v.quorum,
            max_age=v.max_age,
        )
        return self.corroborated.snapshot

    async def _publish_view(self, now: float) -> None:
        v, raw = self.vantage, self._raw
        lease = v.lease() if v is not None else 0
        if v is None or raw is None or not lease:
            return  # no lease (etcd away): a view must not outlive its watcher
        await self._etcd(v.board.publish(my_view(v.me, raw, now, self.cycle.rules), lease))

    async def _pull_controls(self) -> None:
        """The shared pause and approvals, into the local copy the cycle reads."""
        pause = await self.shared_controls.pause_state()
        if pause != await self.local_controls.pause_state():
            await self.local_controls.set_pause(pause.paused, pause.note)
        for inc in self.cycle.store.open_incidents():
            if not _awaiting_approval(inc):
                continue
            approval = await self.shared_controls.approval(inc.id)
            if approval is not None:
                self.cycle.approve(inc.id, approval.at, approval.by)

    async def _etcd(self, call: Awaitable[Any]) -> bool:
        try:
            await self._etcd_raising(call)
        except NotLeaderError as exc:
            await self.step_down(str(exc))
            return False
        except _ETCD_ERRORS:
            return False
        return True

    async def _etcd_raising(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except _ETCD_ERRORS as exc:
            if not self.shared_error:  # log the change, not every failed call
                log.warning("cluster.shared_state_failed", reason=str(exc))
            self.shared_error = str(exc)
            raise
        if self.shared_error:
            log.info("cluster.shared_state_recovered")
        self.shared_error = ""

    def _note_availability(self, lead: Leadership, now: float) -> None:
        if lead.role is Role.UNAVAILABLE:
            self.unavailable_since = self.unavailable_since or now
        else:
            self.unavailable_since = None

    # -- what the status page, the API and the alerts show -----------------------------------

    def status(self) -> dict[str, Any]:
        lead = self.leading.state
        doc = lead.to_dict()
        doc["since_iso"] = (
            datetime.fromtimestamp(lead.since, UTC).isoformat() if lead.since else None
        )
        doc["pending_commands"] = len(self.commands.outbox)
        doc["shared_state_error"] = self.shared_error
        c = self.corroborated
        doc["vantage"] = {
            "fresh_views": list(c.fresh_views) if c else [],
            "silence_set_aside": dict(c.set_aside) if c else {},
            "cut_from_zones": list(c.cut_zones) if c else [],
            # instance ids whose silence a quorum sees: policy.corroborated_grace applies
            "silence_corroborated": sorted(c.corroborated) if c else [],
        }
        return doc

    def alerts(self, now: float) -> list[AlertInput]:
        """etcd out of reach: nobody acts. Labels name no watcher, so every watcher that
        raises it raises the same alert (Alertmanager keeps one)."""
        if self.unavailable_since is None:
            return []
        lead = self.leading.state
        return [
            AlertInput(
                incident_id="",
                alertname="DrwatchNoLeader",
                severity="critical",
                scope="watcher",
                summary="no drwatch watcher may act: etcd is out of reach",
                started_at=self.unavailable_since,
                description=(
                    f"{lead.me}: {lead.reason}. Without etcd nobody leads and no playbook "
                    "runs; every watcher keeps observing and alerting."
                ),
            )
        ]


@dataclass(frozen=True)
class Vantage:
    """What the node needs to publish its view and weigh the others'."""

    me: str
    board: ViewBoard
    lease: Callable[[], int]
    quorum: int
    max_age: float


def follower_report(cycle: Cycle, snapshot: Snapshot, now: float, why: str) -> TickReport:
    """What a watcher that does not act reports: the assessment of what it observes and the
    shared incidents, with no decision and no write."""
    result = assess(snapshot, now, cycle.rules, cycle.store.retired())
    open_now = tuple(cycle.store.open_incidents())
    watcher = result.watcher_impaired
    line = summarise(
        impaired_reason=watcher.evidence if watcher else None,
        started=(),
        open_incidents=open_now,
        assessment=result,
        paused=cycle.paused,
        names={i.id: i.name for i in snapshot.fleet},
    )
    return TickReport(
        at=now,
        watcher_state=cycle.watcher_state(now, result),
        watcher_reason=watcher.evidence if watcher else why,
        summary=f"{why}; {line}",
        assessment=result,
        gate_reasons={i.id: i.gate_reasons for i in open_now if i.gate_reasons},
        open_incidents=open_now,
        dry_run=cycle.policy.dry_run,
        paused=cycle.paused,
    )


def _awaiting_approval(inc: Incident) -> bool:
    return inc.phase is Phase.AWAITING_APPROVAL and inc.approved_at is None


__all__ = ["ClusterNode", "SharedControls", "Solo", "follower_report", "not_acting_reason"]
