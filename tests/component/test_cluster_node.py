"""Two clustered watchers on a real etcd, tick by tick (drwatch.cluster.node): the leader
takes over its term, an operator's pause sent to the follower reaches the leader, the
leader's incidents reach the follower, and when the leader goes the other one pulls them
and resumes the shared journal's runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drwatch.cluster.errors import TickNotSharedError
from drwatch.cluster.incidents import IncidentMirror
from drwatch.cluster.node import ClusterNode, SharedControls
from drwatch.cluster.wiring import Shared, build_cluster
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner, Runner
from drwatch.incidents import IncidentStore, Writes
from drwatch.model import Plan, RunProgress
from drwatch.model.incident import Phase
from tests.component.test_cluster_incidents import incident
from tests.scenarios.world import NOW, World, iid
from tests.support.etcd import EtcdServer, etcd_server, member_config, until

pytestmark = pytest.mark.services


@dataclass
class Runs:
    """Counts what the node asks of the runner (the real one is tested elsewhere)."""

    resumed: int = 0
    closed: int = 0

    async def resume(self) -> int:
        self.resumed += 1
        return 0

    async def aclose(self) -> None:
        self.closed += 1


@dataclass
class Watcher:
    shared: Shared
    store: IncidentStore
    cycle: Cycle
    node: ClusterNode
    runs: Runs
    task: asyncio.Task[None] | None = field(default=None)


def _watcher(srv: EtcdServer, tmp: Path, name: str, runner: Runner | None = None) -> Watcher:
    shared = build_cluster(member_config(srv.endpoint, name))
    store = IncidentStore(tmp / name)
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, runner or NullRunner(), 0.0)
    runs = Runs()
    assert shared.incidents is not None
    node = ClusterNode(
        shared.leadership,
        cycle,
        runs,
        mirror=IncidentMirror(store, shared.incidents),
        shared_controls=shared.controls,
        commands=SharedControls(cycle),
    )
    w = Watcher(shared, store, cycle, node, runs)
    w.task = asyncio.create_task(shared.leadership.run())
    return w


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Watcher, Watcher]]:
    with etcd_server(tmp_path) as srv:
        a = _watcher(srv, tmp_path, "w1")
        await until(lambda: a.shared.leadership.state.acting, 15.0)
        b = _watcher(srv, tmp_path, "w2")
        await until(lambda: b.shared.leadership.state.leader == "w1", 15.0)
        yield a, b
        for w in (a, b):
            if w.task is not None:
                w.task.cancel()
                await asyncio.gather(w.task, return_exceptions=True)
            await w.shared.close()
            w.store.close()


async def test_the_leader_acts_and_shares_and_the_follower_sees(
    pair: tuple[Watcher, Watcher],
) -> None:
    """The leader takes over its term once (resuming the journal's runs); the follower
    does not act; a pause sent to the follower reaches the leader's copy; the leader's
    incident reaches the follower's copy."""
    a, b = pair
    assert await a.node.prepare(1.0) is True
    assert a.runs.resumed == 1
    assert await b.node.prepare(1.0) is False
    b.node.commands.pause(1.0, by="ops")
    assert await b.node.prepare(2.0) is False  # sends the pause to etcd
    assert await a.node.prepare(2.0) is True
    assert a.cycle.paused
    assert a.runs.resumed == 1  # same term: no second take-over

    a.store.save(incident(1))
    await a.node.settle(3.0)
    await b.node.prepare(3.0)
    assert [i.id for i in b.store.open_incidents()] == [incident(1).id]


async def test_when_the_leader_goes_the_other_pulls_and_resumes(
    pair: tuple[Watcher, Watcher],
) -> None:
    """The leader shares an incident and resigns (its process ends); the other wins,
    pulls the incident into its copy and resumes the shared journal's runs."""
    a, b = pair
    assert await a.node.prepare(1.0) is True
    a.store.save(incident(7))
    await a.node.settle(1.0)
    assert a.task is not None
    a.task.cancel()
    await asyncio.gather(a.task, return_exceptions=True)
    a.task = None
    await until(lambda: b.shared.leadership.state.acting, 15.0)
    assert await b.node.prepare(5.0) is True
    assert b.runs.resumed == 1
    assert [i.id for i in b.store.open_incidents()] == [incident(7).id]
    assert await a.node.prepare(5.0) is False
    assert a.runs.closed == 1  # the old leader stopped its runs


class KilledError(Exception):
    """The leader's process ends here (raised out of the tick, as a kill would stop it)."""


@dataclass
class DiesOnSubmit:
    """A runner whose watcher dies as it would start the first run: after the tick's
    incident write, before any side effect."""

    submitted: list[Plan] = field(default_factory=list)
    acts: bool = True

    def submit(self, plan: Plan) -> None:
        self.submitted.append(plan)
        raise KilledError(plan.incident_id)

    def progress(self, incident_id: str) -> RunProgress | None:
        return None

    def active(self) -> int:
        return 0


def _local(store: IncidentStore) -> Callable[[Writes], Awaitable[frozenset[str]]]:
    async def write(writes: Writes) -> frozenset[str]:
        return store.write(writes)

    return write


async def test_a_leader_killed_between_its_write_and_its_act_left_the_incident_in_etcd(
    tmp_path: Path,
) -> None:
    """app-3 is stopped: the leader's tick opens an incident and decides to replace it,
    and the leader dies as it submits the run. Its tick wrote the incident (acting) to
    etcd before that, so the watcher that takes over finds it, with the run it was for."""
    with etcd_server(tmp_path) as srv:
        runner = DiesOnSubmit()
        a = _watcher(srv, tmp_path, "w1", runner)
        await until(lambda: a.shared.leadership.state.acting, 15.0)
        b = _watcher(srv, tmp_path, "w2")
        try:
            await until(lambda: b.shared.leadership.state.leader == "w1", 15.0)
            assert await a.node.prepare(NOW) is True
            world = World.healthy().stop("app-3")
            write = a.node.write_through(_local(a.store))
            with pytest.raises(KilledError):
                await a.cycle.run_tick(world.snapshot(), NOW, write)
            assert [p.targets for p in runner.submitted] == [(iid("app-3"),)]
            assert a.task is not None
            a.task.cancel()  # the process is gone: its leadership ends
            await asyncio.gather(a.task, return_exceptions=True)
            a.task = None

            await until(lambda: b.shared.leadership.state.acting, 15.0)
            assert await b.node.prepare(NOW + 5) is True
            (inc,) = b.store.open_incidents()
            assert inc.scope_key == f"instance:{iid('app-3')}"
            assert inc.phase is Phase.ACTING
            assert inc.id == runner.submitted[0].incident_id
        finally:
            await _close(a, b)


async def test_a_deposed_leaders_tick_writes_nothing_and_acts_on_nothing(tmp_path: Path) -> None:
    """The leader key changes hands (another watcher won) before the old leader's tick
    writes: the fenced write is refused, so neither etcd nor its own copy gets the
    incident, no plan is submitted, and it steps down."""
    with etcd_server(tmp_path) as srv:
        runner = DiesOnSubmit()
        a = _watcher(srv, tmp_path, "w1", runner)
        try:
            await until(lambda: a.shared.leadership.state.acting, 15.0)
            assert await a.node.prepare(NOW) is True
            etcd = a.shared.etcd
            assert etcd is not None
            await etcd.delete_prefix("/drwatch-test/leader")
            await etcd.put("/drwatch-test/leader", b'{"name": "w2"}')
            world = World.healthy().stop("app-3")
            with pytest.raises(TickNotSharedError):
                await a.cycle.run_tick(world.snapshot(), NOW, a.node.write_through(_local(a.store)))
            assert runner.submitted == []
            assert a.store.open_incidents() == []
            assert await a.shared.incidents.incidents() == []  # type: ignore[union-attr]
            assert a.node.term == 0  # stepped down
            assert a.runs.closed == 1
        finally:
            await _close(a)


async def _close(*watchers: Watcher) -> None:
    for w in watchers:
        if w.task is not None:
            w.task.cancel()
            await asyncio.gather(w.task, return_exceptions=True)
        await w.shared.close()
        w.store.close()
