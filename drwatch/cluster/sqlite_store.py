"""The seam's single-watcher side: the existing SQLite journal and incident store, wrapped.

Nothing of their files changes: a watcher that gains the seam reads the state it wrote
before. The journal is thread-safe (its own lock), so its calls run off the loop; the
incident store is not, and its control calls are a single indexed row, run in place.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from drwatch.act.journal import JSON, EffectRow, Journal, RunRow, StepRow
from drwatch.cluster.errors import JournalConflictError
from drwatch.cluster.store import Approval, PauseState
from drwatch.incidents import IncidentStore
from drwatch.model.plan import Plan

P = ParamSpec("P")
R = TypeVar("R")

# The keys drwatch.cycle has always used for the operator's pause (cycle.PAUSED_KEY,
# cycle.PAUSE_NOTE_KEY): the seam reads what a watcher already has on disk.
PAUSED_KEY = "paused"
PAUSE_NOTE_KEY = "pause_note"
APPROVAL_PREFIX = "approval:"


async def _io(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except sqlite3.IntegrityError as exc:
        raise JournalConflictError(f"already journaled: {exc}") from exc


class SqliteJournalStore:
    """`JournalStore` over `drwatch.act.journal.Journal`. Never fenced: one watcher leads."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def start_run(self, run_id: str, plan: Plan, owner: str, now: float) -> None:
        await _io(self.journal.start_run, run_id, plan, owner, now)

    async def take_over(self, run_id: str, owner: str, now: float) -> None:
        await _io(self.journal.take_over, run_id, owner, now)

    async def finish_run(self, run_id: str, status: str, detail: str, now: float) -> None:
        await _io(self.journal.finish_run, run_id, status, detail, now)

    async def run(self, run_id: str) -> RunRow | None:
        return await _io(self.journal.run, run_id)

    async def unfinished(self) -> list[RunRow]:
        return await _io(self.journal.unfinished)

    async def recent(self, limit: int = 500) -> list[RunRow]:
        return await _io(self.journal.recent, limit)

    async def step_intent(self, run_id: str, name: str, owner: str, now: float) -> None:
        await _io(self.journal.step_intent, run_id, name, owner, now)

    async def step_end(
        self,
        run_id: str,
        name: str,
        status: str,
        *,
        detail: str,
        result: JSON,
        owner: str,
        now: float,
    ) -> None:
        await _io(
            self.journal.step_end,
            run_id,
            name,
            status,
            detail=detail,
            result=result,
            owner=owner,
            now=now,
        )

    async def steps(self, run_id: str) -> list[StepRow]:
        return await _io(self.journal.steps, run_id)

    async def effect(self, run_id: str, step: str, key: str) -> EffectRow | None:
        return await _io(self.journal.effect, run_id, step, key)

    async def effect_intent(
        self, run_id: str, step: str, key: str, *, params: JSON, owner: str, now: float
    ) -> None:
        await _io(
            self.journal.effect_intent, run_id, step, key, params=params, owner=owner, now=now
        )

    async def effect_done(
        self, run_id: str, step: str, key: str, *, result: JSON, owner: str, now: float
    ) -> None:
        await _io(self.journal.effect_done, run_id, step, key, result=result, owner=owner, now=now)

    async def has_effects(self, run_id: str) -> bool:
        return await _io(self.journal.has_effects, run_id)

    def close(self) -> None:
        self.journal.close()


class SqliteControlStore:
    """`ControlStore` over the incident store's `controls` table."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    async def pause_state(self) -> PauseState:
        paused = self.store.get_control(PAUSED_KEY) == "1"
        return PauseState(paused, (self.store.get_control(PAUSE_NOTE_KEY) or "") if paused else "")

    async def set_pause(self, paused: bool, note: str) -> None:
        # No batch of our own: a tick may hold the store's transaction; these join it.
        self.store.set_control(PAUSED_KEY, "1" if paused else "0")
        self.store.set_control(PAUSE_NOTE_KEY, note if paused else "")

    async def approve(self, incident_id: str, by: str, at: float) -> Approval:
        # Read and write with no await between: nothing else runs in between.
        existing = self._approval(incident_id)
        if existing is not None:
            return existing
        self.store.set_control(APPROVAL_PREFIX + incident_id, json.dumps({"by": by, "at": at}))
        return Approval(incident_id, by, at)

    async def approval(self, incident_id: str) -> Approval | None:
        return self._approval(incident_id)

    def _approval(self, incident_id: str) -> Approval | None:
        body = self.store.get_control(APPROVAL_PREFIX + incident_id)
        if body is None:
            return None
        d = json.loads(body)
        return Approval(incident_id, str(d["by"]), float(d["at"]))
