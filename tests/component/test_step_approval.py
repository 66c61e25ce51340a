"""`drwatch approve INCIDENT` approves the step of a running playbook that waits for it
(`restore_from_dump`), through the same API call as a gated incident: the daemon's
controls (ApprovingControls over the real Cycle and incident store), the status
document showing the step that waits, and the ladder's rung reading the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drwatch.act.approvals import StepApprovals
from drwatch.act.testing import run_plan
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner
from drwatch.incidents import IncidentStore
from drwatch.model.plan import RunOutcome, StepStatus
from drwatch.web import approvals as approvals_web
from drwatch.web.api import LiveApiState, add_routes
from tests.component.test_api import AUTH, TOKEN, _region_down
from tests.component.test_playbook_database import statuses
from tests.component.test_playbook_database_backups import every_snapshot_corrupt
from tests.scenarios.world import NOW

Client = TestClient[web.Request, web.Application]


class Daemon:
    def __init__(self, tmp_path: Path, not_leading: str | None = None) -> None:
        self.store = IncidentStore(tmp_path / "state")
        self.cycle = Cycle(PolicyConfig(), TimingConfig(), self.store, NullRunner(), NOW - 3600)
        self.steps = StepApprovals(self.store)
        controls = approvals_web.ApprovingControls(
            self.cycle, self.steps, self.store, lambda: not_leading
        )
        self.state = LiveApiState(
            watcher_name="drwatch-test",
            dry_run=False,
            api_token=TOKEN,
            incidents=self.store,
            controls=controls,
            clock=lambda: NOW,
        )


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Client, Daemon]]:
    async with serving(Daemon(tmp_path)) as both:
        yield both


@asynccontextmanager
async def serving(d: Daemon) -> AsyncIterator[tuple[Client, Daemon]]:
    app = web.Application()
    add_routes(app, d.state)
    approvals_web.add_routes(app, d.steps)
    async with TestClient(TestServer(app)) as c:
        yield c, d
    d.store.close()


async def test_approve_answers_the_running_rungs_request_and_the_status_shows_it_waiting(
    daemon: tuple[Client, Daemon], tmp_path: Path
) -> None:
    c, d = daemon
    # An incident approved at its gate, now acting (its playbook runs).
    snap = _region_down().snapshot()
    d.state.update(d.cycle.tick(snap, NOW), snap)
    (inc,) = d.store.open_incidents()
    assert (await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)).status == 200
    assert (await (await c.get("/api/v1/status")).json())["approvals"] == []

    world, deps, plan, _catalogue, _ = every_snapshot_corrupt(approved=False)
    deps = replace(deps, approvals=d.steps)
    plan = replace(plan, incident_id=inc.id)
    task = asyncio.create_task(run_plan(tmp_path / "j.db", deps, plan, owner="w1", within=60))
    for _ in range(2000):
        if d.steps.pending(inc.id) is not None:
            break
        await asyncio.sleep(0.01)
    doc = await (await c.get("/api/v1/status")).json()
    (waiting,) = doc["approvals"]
    assert waiting["incident"] == inc.id
    assert waiting["what"].startswith("restore_from_dump: restore dump orders-dump-2 of orders")
    (open_doc,) = doc["open_incidents"]
    assert open_doc["pending_approval"]["what"] == waiting["what"]
    assert world.hosts.restores == []  # nothing restored before the approval

    resp = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH, json={"by": "sam"})
    assert resp.status == 200
    progress = await task
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    status, detail = statuses(progress)["restore_from_dump"]
    assert status is StepStatus.DONE
    assert "approved by sam" in detail
    assert len(world.hosts.restores) == 1
    assert (await (await c.get("/api/v1/status")).json())["approvals"] == []
    # Nothing waits any more: a second approve is refused, as for any incident.
    again = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)
    assert again.status == 409


async def test_an_approval_is_kept_across_a_restart_and_a_resumed_run_finds_it(
    tmp_path: Path,
) -> None:
    store = IncidentStore(tmp_path / "state")
    steps = StepApprovals(store)
    steps.request("inc-1", "restore_from_dump: restore dump d-2 (data lost: 90 s)", NOW)
    assert steps.approved("inc-1", "restore_from_dump") is None
    assert steps.approve("inc-1", "sam", NOW + 5) == (
        "restore_from_dump: restore dump d-2 (data lost: 90 s)"
    )
    store.close()
    again = StepApprovals(IncidentStore(tmp_path / "state"))
    # The resumed run asks again with the same words: the approval stands.
    again.request("inc-1", "restore_from_dump: restore dump d-2 (data lost: 90 s)", NOW + 60)
    assert again.approved("inc-1", "restore_from_dump") == "sam"
    assert again.pending("inc-1") is None
    assert again.approve("inc-1", "kim", NOW + 61) is None  # nothing waits
    assert again.approved("inc-2", "restore_from_dump") is None


async def test_an_incident_waiting_at_its_gates_is_approved_there_first(
    daemon: tuple[Client, Daemon],
) -> None:
    """A step request left from an earlier run does not swallow the approval an incident
    that waits at its gates needs: the gate is approved, the old request stays."""
    c, d = daemon
    snap = _region_down().snapshot()
    d.state.update(d.cycle.tick(snap, NOW), snap)
    (inc,) = d.store.open_incidents()
    d.steps.request(inc.id, "restore_from_dump: restore dump d-1 (data lost: 9 s)", NOW)
    resp = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)
    assert resp.status == 200
    approved = d.store.get(inc.id)
    assert approved is not None
    assert approved.approved_at == NOW
    assert d.steps.pending(inc.id) is not None


async def test_a_follower_refuses_a_running_steps_approval_and_names_the_leader(
    tmp_path: Path,
) -> None:
    """With several watchers the step waits in the leader's store: a follower cannot
    answer it, and says where to send it instead of queueing an approval for a step
    nobody has seen. An incident waiting at its gates is still approved anywhere."""
    follower = Daemon(tmp_path, not_leading="follower: drwatch-2 leads since 01:00")
    async with serving(follower) as (c, d):
        snap = _region_down().snapshot()
        d.state.update(d.cycle.tick(snap, NOW), snap)
        (inc,) = d.store.open_incidents()
        assert (await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)).status == 200
        resp = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)
        assert resp.status == 409
        body = await resp.text()
        assert "drwatch-2 leads" in body
        assert "through the leader's API" in body
