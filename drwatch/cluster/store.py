"""The storage seam: the playbook journal and the operator's controls, behind Protocols.

One watcher keeps both in SQLite (`drwatch.cluster.sqlite_store`, wrapping the existing
`Journal` and `IncidentStore`); several watchers keep them in etcd
(`drwatch.cluster.etcd_store`), where every journal write is fenced by the leader key.
Both pass the same contract tests (tests/component/test_cluster_store.py).

The journal's rows and statuses are the existing ones (`drwatch.act.journal`): the seam
changes where they live, not what they say. The methods are async because etcd is
remote; the SQLite side runs its short synchronous calls off the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from drwatch.act.journal import JSON, EffectRow, RunRow, StepRow
from drwatch.model.plan import Plan


class JournalStore(Protocol):
    """The crash-safe record of playbook runs, steps and side effects (see act/journal.py).

    Creating a row that exists (`start_run`, `effect_intent`) raises
    JournalConflictError. Updates of a row that does not exist do nothing. A store that
    is fenced raises NotLeaderError on any write this watcher may not make.
    """

    async def start_run(self, run_id: str, plan: Plan, owner: str, now: float) -> None: ...
    async def take_over(self, run_id: str, owner: str, now: float) -> None: ...
    async def finish_run(self, run_id: str, status: str, detail: str, now: float) -> None: ...
    async def run(self, run_id: str) -> RunRow | None: ...
    async def unfinished(self) -> list[RunRow]: ...
    async def recent(self, limit: int = 500) -> list[RunRow]: ...
    async def step_intent(self, run_id: str, name: str, owner: str, now: float) -> None: ...
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
    ) -> None: ...
    async def steps(self, run_id: str) -> list[StepRow]: ...
    async def effect(self, run_id: str, step: str, key: str) -> EffectRow | None: ...
    async def effect_intent(
        self, run_id: str, step: str, key: str, *, params: JSON, owner: str, now: float
    ) -> None: ...
    async def effect_done(
        self, run_id: str, step: str, key: str, *, result: JSON, owner: str, now: float
    ) -> None: ...
    async def has_effects(self, run_id: str) -> bool: ...
    def close(self) -> None:
        """Release what this store holds of its own (the SQLite file; etcd's client is
        the daemon's)."""


@dataclass(frozen=True, slots=True)
class PauseState:
    paused: bool
    note: str  # who paused, and when ("by api at 14:05Z"); empty when not paused


@dataclass(frozen=True, slots=True)
class Approval:
    incident_id: str
    by: str
    at: float


class ControlStore(Protocol):
    """The operator's controls. Any watcher may write them (an operator's command sent to a
    follower counts); only the leader acts on them. The first approval of an incident
    stands: approving again returns it unchanged."""

    async def pause_state(self) -> PauseState: ...
    async def set_pause(self, paused: bool, note: str) -> None: ...
    async def approve(self, incident_id: str, by: str, at: float) -> Approval: ...
    async def approval(self, incident_id: str) -> Approval | None: ...
