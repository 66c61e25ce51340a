"""Two clustered watchers on a real etcd, tick by tick (drwatch.cluster.node): the leader
takes over its term, an operator's pause sent to the follower reaches the leader, the
leader's incidents reach the follower, and when the leader goes the other one pulls them
and resumes the shared journal's runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drwatch.cluster.incidents import IncidentMirror
from drwatch.cluster.node import ClusterNode, SharedControls
from drwatch.cluster.wiring import Shared, build_cluster
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner
from drwatch.incidents import IncidentStore
from tests.component.test_cluster_incidents import incident
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


def _watcher(srv: EtcdServer, tmp: Path, name: str) -> Watcher:
    shared = build_cluster(member_config(srv.endpoint, name))
    store = IncidentStore(tmp / name)
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, NullRunner(), 0.0)
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
