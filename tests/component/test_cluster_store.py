"""The storage seam's contract: the same cases against SQLite (one watcher) and etcd.

The etcd side runs on a real etcd (Debian `etcd-server`) on loopback, with a leader key
written the way a campaign writes it, so its journal writes pass the fence.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drwatch.act.journal import (
    EFFECT_DONE,
    EFFECT_INTENT,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    STEP_DONE,
    STEP_INTENT,
    Journal,
)
from drwatch.cluster.errors import JournalConflictError, NotLeaderError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import EtcdControlStore, EtcdJournalStore
from drwatch.cluster.leader import Fence
from drwatch.cluster.sqlite_store import SqliteControlStore, SqliteJournalStore
from drwatch.cluster.store import ControlStore, JournalStore
from drwatch.cycle import PAUSE_NOTE_KEY, PAUSED_KEY
from drwatch.incidents import IncidentStore
from drwatch.model.plan import Plan, PlaybookName
from tests.support.etcd import EtcdServer, etcd_server

pytestmark = pytest.mark.services


@dataclass
class Stores:
    journal: JournalStore
    controls: ControlStore


@pytest.fixture(scope="module")
def etcd_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path_factory.mktemp("etcd")) as srv:
        yield srv


_namespaces = iter(range(10_000))


async def _etcd_stores(srv: EtcdServer) -> tuple[Stores, Etcd, Fence, str]:
    etcd = Etcd([srv.endpoint], timeout=2.0)
    ns = f"contract-{next(_namespaces)}"
    await etcd.put(f"/{ns}/leader", json.dumps({"name": "w1"}).encode())
    kv = await etcd.get(f"/{ns}/leader")
    assert kv is not None
    fence = Fence(kv.key, kv.create_revision)
    stores = Stores(EtcdJournalStore(etcd, ns, lambda: fence), EtcdControlStore(etcd, ns))
    return stores, etcd, fence, ns


@pytest.fixture(params=["sqlite", "etcd"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        journal = Journal.in_state_dir(tmp_path)
        incidents = IncidentStore(tmp_path)
        yield Stores(SqliteJournalStore(journal), SqliteControlStore(incidents))
        journal.close()
        incidents.close()
        return
    srv: EtcdServer = request.getfixturevalue("etcd_srv")
    s, etcd, _, _ = await _etcd_stores(srv)
    yield s
    await etcd.close()


def plan(incident: str = "inc-1") -> Plan:
    return Plan(
        incident_id=incident,
        playbook=PlaybookName.APP_REPLACE,
        region="us-east-1",
        zone="us-east-1a",
        group="app",
        targets=("i-1",),
        avoid_zones=("us-east-1a",),
        reason="host lost",
    )


async def test_a_run_is_started_taken_over_and_finished(stores: Stores) -> None:
    """The run row reads back with its plan; take_over moves the owner; finish ends it."""
    j = stores.journal
    await j.start_run("r1", plan(), "w1", 100.0)
    row = await j.run("r1")
    assert row is not None
    assert (row.status, row.owner, row.plan, row.started_at) == (RUN_RUNNING, "w1", plan(), 100.0)
    await j.take_over("r1", "w2", 110.0)
    await j.finish_run("r1", RUN_SUCCEEDED, "replaced i-1", 120.0)
    row = await j.run("r1")
    assert row is not None
    assert (row.owner, row.status, row.detail, row.ended_at) == (
        "w2",
        RUN_SUCCEEDED,
        "replaced i-1",
        120.0,
    )
    assert await j.run("nope") is None


async def test_starting_a_run_twice_is_a_conflict(stores: Stores) -> None:
    """A run id is written once: a second start must resume, not overwrite."""
    await stores.journal.start_run("r1", plan(), "w1", 100.0)
    with pytest.raises(JournalConflictError):
        await stores.journal.start_run("r1", plan("inc-2"), "w2", 101.0)
    row = await stores.journal.run("r1")
    assert row is not None
    assert row.incident_id == "inc-1"


async def test_unfinished_and_recent_are_in_start_order(stores: Stores) -> None:
    """unfinished lists running runs oldest first; recent keeps the newest `limit`."""
    j = stores.journal
    for i, run_id in enumerate(["r-b", "r-a", "r-c"]):
        await j.start_run(run_id, plan(f"inc-{i}"), "w1", 100.0 + i)
    await j.finish_run("r-a", RUN_FAILED, "gave up", 110.0)
    assert [r.run_id for r in await j.unfinished()] == ["r-b", "r-c"]
    assert [r.run_id for r in await j.recent()] == ["r-b", "r-a", "r-c"]
    assert [r.run_id for r in await j.recent(limit=2)] == ["r-a", "r-c"]


async def test_a_step_reentered_after_a_crash_keeps_its_start_and_place(stores: Stores) -> None:
    """step_intent twice: one row, first start time and order kept, new owner taken."""
    j = stores.journal
    await j.start_run("r1", plan(), "w1", 100.0)
    await j.step_intent("r1", "launch", "w1", 101.0)
    await j.step_intent("r1", "attach", "w1", 102.0)
    await j.step_intent("r1", "launch", "w2", 150.0)
    await j.step_end(
        "r1",
        "launch",
        STEP_DONE,
        detail="launched",
        result={"launched": ["i-9"]},
        owner="w2",
        now=151.0,
    )
    steps = await j.steps("r1")
    assert [(s.name, s.status, s.owner, s.started_at) for s in steps] == [
        ("launch", STEP_DONE, "w2", 101.0),
        ("attach", STEP_INTENT, "w1", 102.0),
    ]
    assert steps[0].result == {"launched": ["i-9"]}
    assert steps[0].ended_at == 151.0


async def test_an_effect_is_journaled_once_then_done(stores: Stores) -> None:
    """Intent with its params, then done with its result; a second intent is a conflict."""
    j = stores.journal
    await j.start_run("r1", plan(), "w1", 100.0)
    assert not await j.has_effects("r1")
    assert await j.effect("r1", "launch", "run:app/1") is None
    await j.effect_intent("r1", "launch", "run:app/1", params={"zone": "b"}, owner="w1", now=101.0)
    row = await j.effect("r1", "launch", "run:app/1")
    assert row is not None
    assert (row.status, row.params, row.result) == (EFFECT_INTENT, {"zone": "b"}, None)
    assert await j.has_effects("r1")
    with pytest.raises(JournalConflictError):
        await j.effect_intent("r1", "launch", "run:app/1", params={}, owner="w2", now=102.0)
    await j.effect_done("r1", "launch", "run:app/1", result={"id": "i-9"}, owner="w1", now=103.0)
    row = await j.effect("r1", "launch", "run:app/1")
    assert row is not None
    assert (row.status, row.params, row.result) == (EFFECT_DONE, {"zone": "b"}, {"id": "i-9"})


async def test_updates_of_missing_rows_do_nothing(stores: Stores) -> None:
    """Finishing an unknown run or ending an unknown step writes nothing."""
    j = stores.journal
    await j.finish_run("ghost", RUN_SUCCEEDED, "", 1.0)
    await j.step_end("ghost", "s", STEP_DONE, detail="", result={}, owner="w1", now=1.0)
    assert await j.run("ghost") is None
    assert await j.steps("ghost") == []


async def test_pause_and_resume(stores: Stores) -> None:
    """Unpaused at first; a pause keeps its note; resuming clears both."""
    c = stores.controls
    assert (await c.pause_state()).paused is False
    await c.set_pause(True, "by api at 14:05Z")
    state = await c.pause_state()
    assert (state.paused, state.note) == (True, "by api at 14:05Z")
    await c.set_pause(False, "ignored")
    state = await c.pause_state()
    assert (state.paused, state.note) == (False, "")


async def test_the_first_approval_stands(stores: Stores) -> None:
    """An approval is recorded once; approving again returns the first one unchanged."""
    c = stores.controls
    assert await c.approval("inc-1") is None
    first = await c.approve("inc-1", "alice", 100.0)
    again = await c.approve("inc-1", "bob", 200.0)
    assert (first.by, first.at) == ("alice", 100.0)
    assert again == first
    assert await c.approval("inc-1") == first
    assert await c.approval("inc-2") is None


async def test_sqlite_controls_read_the_pause_the_watcher_already_has(tmp_path: Path) -> None:
    """The seam uses the incident store's existing keys: state on disk keeps its meaning."""
    incidents = IncidentStore(tmp_path)
    incidents.set_control(PAUSED_KEY, "1")
    incidents.set_control(PAUSE_NOTE_KEY, "by cli at 09:00Z")
    state = await SqliteControlStore(incidents).pause_state()
    incidents.close()
    assert (state.paused, state.note) == (True, "by cli at 09:00Z")


async def test_etcd_journal_refuses_a_deposed_leaders_writes(etcd_srv: EtcdServer) -> None:
    """Once the leader key is re-created (another leader won), every journal write with the
    old fence is refused by etcd and leaves nothing behind."""
    stores, etcd, fence, _ = await _etcd_stores(etcd_srv)
    j = stores.journal
    await j.start_run("r1", plan(), "w1", 100.0)
    await etcd.delete_prefix(fence.key)
    await etcd.put(fence.key, json.dumps({"name": "w2"}).encode())
    with pytest.raises(NotLeaderError, match="deposed"):
        await j.effect_intent("r1", "launch", "k", params={}, owner="w1", now=101.0)
    with pytest.raises(NotLeaderError):
        await j.step_intent("r1", "launch", "w1", 101.0)
    with pytest.raises(NotLeaderError):
        await j.finish_run("r1", RUN_SUCCEEDED, "", 102.0)
    assert await j.effect("r1", "launch", "k") is None
    assert await j.steps("r1") == []
    row = await j.run("r1")
    assert row is not None
    assert row.status == RUN_RUNNING
    await etcd.close()


async def test_etcd_journal_asks_the_fence_before_each_write(etcd_srv: EtcdServer) -> None:
    """A watcher that does not lead (its election says so) writes nothing at all."""
    _, etcd, _, ns = await _etcd_stores(etcd_srv)

    def not_leading() -> Fence:
        raise NotLeaderError("w1 does not lead (follower): w2 leads")

    j = EtcdJournalStore(etcd, ns, not_leading)
    with pytest.raises(NotLeaderError, match="follower"):
        await j.start_run("r1", plan(), "w1", 100.0)
    assert await j.run("r1") is None
    await etcd.close()
