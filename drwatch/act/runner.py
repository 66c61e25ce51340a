"""The playbook runner: runs submitted plans as tasks it owns, journaled step by step.

Each step: journaled as started; the step function runs; every side effect inside it
goes through `_Effects.effect` (journal "done?" -> world "done?" -> kill switch before
the run's first side effect -> journal intent -> apply -> journal done); the step ends
`done`, `skipped` or `failed` in the journal. A crash anywhere leaves the run
`running` in the journal; `resume()` on the next start continues it, and effects that
were journaled done (or that the world already shows) are not applied again.

The kill switch is checked at every step boundary (and before the run's first side
effect): while it is on, the run waits there, still `running` in the journal, and goes
on when it is lifted. A step in flight finishes, so nothing is left half-done inside a
step; a run resumed at start while paused waits the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from drwatch.act.base import (
    JSON,
    Apply,
    Check,
    Deps,
    Outcome,
    Playbook,
    RunContext,
    Step,
    StepError,
)
from drwatch.act.journal import (
    EFFECT_DONE,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    STEP_DONE,
    STEP_FAILED,
    STEP_SKIPPED,
    Journal,
    RunRow,
    StepRow,
)
from drwatch.errors import DrwatchError, ProviderError
from drwatch.logs import get_logger
from drwatch.model.plan import (
    Plan,
    PlaybookName,
    RunOutcome,
    RunProgress,
    StepRecord,
    StepStatus,
)

P = ParamSpec("P")
R = TypeVar("R")

CrashHook = Callable[[str], None]
ROLE_WATCH_INTERVAL_S = 2.0
# How often a run held by the kill switch looks again (the operator's resume is the
# only deadline of that wait; shutdown cancels it, and the run resumes on next start).
HOLD_POLL_S = 0.5

_STEP_STATUS = {
    "intent": StepStatus.RUNNING,
    STEP_DONE: StepStatus.DONE,
    STEP_SKIPPED: StepStatus.SKIPPED,
    STEP_FAILED: StepStatus.FAILED,
}
_RUN_OUTCOME = {
    RUN_RUNNING: RunOutcome.RUNNING,
    RUN_SUCCEEDED: RunOutcome.SUCCEEDED,
    RUN_FAILED: RunOutcome.FAILED,
}


class KillSwitchError(DrwatchError):
    """Kept for callers that catch it; the runner now waits instead of raising it."""


def _no_crash(_point: str) -> None:
    return None


async def _io(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Journal I/O off the event loop: an fsync must not stall the probes."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def progress_of(run: RunRow, steps: list[StepRow]) -> RunProgress:
    """What the API and drill reports show of one run."""
    launched = tuple(i for s in steps for i in s.result.get("launched", ()))
    return RunProgress(
        run_id=run.run_id,
        incident_id=run.incident_id,
        playbook=run.playbook,
        outcome=_RUN_OUTCOME.get(run.status, RunOutcome.FAILED),
        steps=tuple(
            StepRecord(s.name, _STEP_STATUS[s.status], s.started_at, s.ended_at, s.detail)
            for s in steps
        ),
        started_at=run.started_at,
        ended_at=run.ended_at,
        detail=run.detail,
        new_instances=launched,
    )


class Runner:
    """Implements the cycle's runner Protocol: `submit`, `progress`, `active`, `acts`."""

    acts = True

    def __init__(
        self,
        journal: Journal,
        playbooks: dict[PlaybookName, Playbook],
        deps: Deps,
        owner: str,
        kill_switch: Callable[[], bool],
        *,
        crash_hook: CrashHook = _no_crash,
    ) -> None:
        self._journal = journal
        self._playbooks = playbooks
        self._deps = deps
        self._owner = owner
        self._kill_switch = kill_switch
        self._crash_hook = crash_hook
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by incident id
        self._role_watch: asyncio.Task[None] | None = None
        self._progress: dict[str, RunProgress] = {}  # by incident id
        self._log = get_logger(component="runner", owner=owner)

    @property
    def journal(self) -> Journal:
        """The journal this runner writes (the daemon closes it after `aclose`)."""
        return self._journal

    # -- the Protocol -----------------------------------------------------------------------

    def submit(self, plan: Plan) -> None:
        """Start running `plan` in a task this runner owns; a second plan for an incident
        whose run is still in flight is ignored (the first one is already acting)."""
        if self._in_flight(plan.incident_id):
            self._log.info("run.duplicate_ignored", incident=plan.incident_id)
            return
        self._deps.roles.observe(self._deps.fleet.latest())
        run_id = f"r{uuid.uuid4().hex[:16]}"
        # Visible at once: the cycle must not read the previous run's progress as this one's.
        self._progress[plan.incident_id] = RunProgress(
            run_id, plan.incident_id, plan.playbook, RunOutcome.RUNNING, started_at=self._now()
        )
        self._spawn(plan, run_id, resumed=False)

    def _in_flight(self, incident_id: str) -> bool:
        """A run whose outcome is already published counts as over, even while its task
        finishes: the cycle may submit the incident's next plan as soon as it reads it."""
        progress = self._progress.get(incident_id)
        running = progress is not None and progress.outcome is RunOutcome.RUNNING
        return incident_id in self._tasks and running

    def progress(self, incident_id: str) -> RunProgress | None:
        return self._progress.get(incident_id)

    def active(self) -> int:
        return sum(1 for incident in self._tasks if self._in_flight(incident))

    # -- lifecycle --------------------------------------------------------------------------

    async def resume(self) -> int:
        """Load recent runs for `progress`, and continue every unfinished one. Returns how
        many were resumed."""
        for row in await _io(self._journal.recent):
            self._progress[row.incident_id] = progress_of(
                row, await _io(self._journal.steps, row.run_id)
            )
        if self._role_watch is None:
            self._role_watch = asyncio.get_running_loop().create_task(
                self._watch_roles(), name="runner-roles"
            )
        unfinished = await _io(self._journal.unfinished)
        for row in unfinished:
            if row.incident_id not in self._tasks:
                self._log.info(
                    "run.resumed",
                    run=row.run_id,
                    incident=row.incident_id,
                    playbook=row.playbook.value,
                    previous_owner=row.owner,
                )
                self._spawn(row.plan, row.run_id, resumed=True)
        return len(unfinished)

    async def wait(self, incident_id: str, within: float) -> RunProgress | None:
        """Wait (at most `within` s) for the incident's run to end; its final progress."""
        task = self._tasks.get(incident_id)
        if task is not None:
            # asyncio.wait: a cancelled or failed run must not raise into the waiter.
            await asyncio.wait({task}, timeout=within)
        return self._progress.get(incident_id)

    async def _watch_roles(self) -> None:
        """Remember database roles while the hosts still answer (read-only, no I/O)."""
        while True:
            self._deps.roles.observe(self._deps.fleet.latest())
            await self._deps.clock.sleep(ROLE_WATCH_INTERVAL_S)

    async def aclose(self) -> None:
        """Cancel every run; they stay `running` in the journal and resume on next start."""
        tasks = [*self._tasks.values(), *([self._role_watch] if self._role_watch else [])]
        self._role_watch = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, plan: Plan, run_id: str, *, resumed: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            self._guarded(plan, run_id, resumed=resumed), name=f"run-{run_id}"
        )
        self._tasks[plan.incident_id] = task
        task.add_done_callback(lambda t: self._forget(plan.incident_id, t))

    def _forget(self, incident_id: str, task: object) -> None:
        if self._tasks.get(incident_id) is task:
            del self._tasks[incident_id]

    async def _guarded(self, plan: Plan, run_id: str, *, resumed: bool) -> None:
        """A run whose journal cannot be written ends failed in memory, loudly; the next
        start resumes it from whatever the journal holds."""
        try:
            await self._run(plan, run_id, resumed=resumed)
        except Exception as err:
            self._log.exception("run.journal_failed", run=run_id, incident=plan.incident_id)
            self._progress[plan.incident_id] = RunProgress(
                run_id,
                plan.incident_id,
                plan.playbook,
                RunOutcome.FAILED,
                detail=f"journal error: {type(err).__name__}: {err}",
            )

    # -- one run ----------------------------------------------------------------------------

    async def _run(self, plan: Plan, run_id: str, *, resumed: bool) -> None:
        log = self._log.bind(run=run_id, incident=plan.incident_id, playbook=plan.playbook.value)
        now = self._deps.clock.now()
        if resumed:
            await _io(self._journal.take_over, run_id, self._owner, now)
        else:
            await _io(self._journal.start_run, run_id, plan, self._owner, now)
            log.info("run.start", targets=list(plan.targets), reason=plan.reason)
        await self._publish(run_id)
        status, detail = await self._steps(plan, run_id, log)
        await asyncio.shield(
            _io(self._journal.finish_run, run_id, status, detail, self._deps.clock.now())
        )
        await self._publish(run_id)
        log.info(f"run.{status}", detail=detail)

    async def _steps(self, plan: Plan, run_id: str, log: Any) -> tuple[str, str]:
        playbook = self._playbooks.get(plan.playbook)
        if playbook is None:
            return RUN_FAILED, f"no playbook named {plan.playbook.value} is installed"
        effects = _Effects(self, run_id, await _io(self._journal.has_effects, run_id))
        ctx = RunContext(run_id=run_id, plan=plan, deps=self._deps, gate=effects)
        journaled = {s.name: s for s in await _io(self._journal.steps, run_id)}
        try:
            for step in playbook.steps:
                row = journaled.get(step.name)
                if row is None or row.status not in (STEP_DONE, STEP_SKIPPED):
                    await self.hold(run_id, f"before step {step.name}")
                await self._step(ctx, step, row, log)
        except (StepError, ProviderError, KillSwitchError) as err:
            return RUN_FAILED, str(err)
        except Exception as err:  # a bug in a step must fail the run, not kill the daemon
            log.exception("run.crashed")
            return RUN_FAILED, f"internal error: {type(err).__name__}: {err}"
        return RUN_SUCCEEDED, f"{len(playbook.steps)} steps completed"

    async def _step(self, ctx: RunContext, step: Step, row: StepRow | None, log: Any) -> None:
        if row is not None and row.status in (STEP_DONE, STEP_SKIPPED):
            ctx.results[step.name] = row.result
            return
        ctx.step = step.name
        await _io(self._journal.step_intent, ctx.run_id, step.name, self._owner, self._now())
        await self._publish(ctx.run_id)
        outcome = await self._apply_step(ctx, step, log)
        status = STEP_DONE if outcome.status == "done" else STEP_SKIPPED
        await self._end_step(ctx, step.name, status, outcome.detail, outcome.result)
        ctx.results[step.name] = outcome.result
        log.info(f"step.{status}", step=step.name, detail=outcome.detail)
        self._crash_hook(f"{step.name}:end")

    async def _apply_step(self, ctx: RunContext, step: Step, log: Any) -> Outcome:
        try:
            return await step.run(ctx)
        except (StepError, ProviderError, KillSwitchError) as err:
            await self._end_step(ctx, step.name, STEP_FAILED, str(err), {})
            log.warning("step.failed", step=step.name, detail=str(err))
            raise

    async def _end_step(
        self, ctx: RunContext, name: str, status: str, detail: str, result: JSON
    ) -> None:
        # Shielded: a cancellation while the row is being written must not lose it.
        await asyncio.shield(
            _io(
                self._journal.step_end,
                ctx.run_id,
                name,
                status,
                detail=detail,
                result=result,
                owner=self._owner,
                now=self._now(),
            )
        )
        await self._publish(ctx.run_id)

    async def hold(self, run_id: str, where: str) -> None:
        """Wait here while the kill switch is on (logged once when held, once when let go)."""
        if not self._kill_switch():
            return
        self._log.info("run.held", run=run_id, where=where)
        while self._kill_switch():
            await self._deps.clock.sleep(HOLD_POLL_S)
        self._log.info("run.released", run=run_id, where=where)

    async def _publish(self, run_id: str) -> None:
        run = await _io(self._journal.run, run_id)
        if run is not None:
            self._progress[run.incident_id] = progress_of(
                run, await _io(self._journal.steps, run_id)
            )

    def _now(self) -> float:
        return self._deps.clock.now()


class _Effects:
    """The EffectGate of one run: each side effect at most once, journaled around it."""

    def __init__(self, runner: Runner, run_id: str, touched: bool) -> None:
        self._r = runner
        self._run_id = run_id
        # Whether this run has made (or journaled the intent of) any side effect yet.
        self._touched = touched

    async def effect(self, step: str, key: str, params: JSON, check: Check, apply: Apply) -> JSON:
        journal, owner, hook = self._r._journal, self._r._owner, self._r._crash_hook
        row = await _io(journal.effect, self._run_id, step, key)
        if row is not None and row.status == EFFECT_DONE and row.result is not None:
            return row.result
        if row is not None:
            params = row.params  # the crashed attempt's choices stand: same zone, same token
        found = await check(params)
        if row is None and found is None and not self._touched:
            # Paused since the step began: nothing changed yet, so wait right here.
            await self._r.hold(self._run_id, f"before the first side effect ({step}/{key})")
            self._touched = True
        if row is None:
            await _io(
                journal.effect_intent,
                self._run_id,
                step,
                key,
                params=params,
                owner=owner,
                now=self._r._now(),
            )
        if found is not None:
            await self._done(step, key, found)
            return found
        hook(f"{step}/{key}:intent")
        result = await apply(params)
        hook(f"{step}/{key}:applied")
        await self._done(step, key, result)
        hook(f"{step}/{key}:done")
        return result

    async def recorded(self, step: str, key: str) -> JSON | None:
        row = await _io(self._r._journal.effect, self._run_id, step, key)
        return row.result if row is not None and row.status == EFFECT_DONE else None

    async def _done(self, step: str, key: str, result: JSON) -> None:
        # Shielded: once the effect is made, losing its "done" row costs a world check.
        await asyncio.shield(
            _io(
                self._r._journal.effect_done,
                self._run_id,
                step,
                key,
                result=result,
                owner=self._r._owner,
                now=self._r._now(),
            )
        )
