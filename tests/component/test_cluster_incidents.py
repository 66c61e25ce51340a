"""The shared incident seam's contract, against SQLite (one watcher) and a real etcd;
and the mirror that keeps a watcher's local copy in step with etcd."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drwatch.cluster.errors import NotLeaderError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.incidents import (
    EtcdSharedIncidents,
    IncidentMirror,
    SharedIncidents,
    SqliteSharedIncidents,
)
from drwatch.cluster.leader import Fence
from drwatch.incidents import IncidentStore
from drwatch.model.findings import Finding, Severity
from drwatch.model.incident import Incident, IncidentState, Phase
from drwatch.model.plan import Scope
from tests.support.etcd import EtcdServer, etcd_server

pytestmark = pytest.mark.services

_namespaces = iter(range(10_000))


def incident(n: int, *, opened: float = 100.0, **changes: object) -> Incident:
    inc = Incident(
        id=f"inc-20261201T100000-{n:04x}",
        scope=Scope.INSTANCE,
        scope_key=f"instance:i-{n}",
        finding=Finding.INSTANCE_STOPPED,
        severity=Severity.OUTAGE,
        region="us-east-1",
        zone="us-east-1b",
        roles=("app_server",),
        groups=("app",),
        target_ids=(f"i-{n}",),
        target_names=(f"app-{n}",),
        opened_at=opened,
        updated_at=opened,
        evidence="stopped",
    )
    return inc.with_(**changes) if changes else inc


@pytest.fixture(scope="module")
def etcd_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path_factory.mktemp("etcd")) as srv:
        yield srv


async def _leader(etcd: Etcd) -> tuple[str, Fence]:
    ns = f"incidents-{next(_namespaces)}"
    await etcd.put(f"/{ns}/leader", json.dumps({"name": "w1"}).encode())
    kv = await etcd.get(f"/{ns}/leader")
    assert kv is not None
    return ns, Fence(kv.key, kv.create_revision)


@pytest.fixture(params=["sqlite", "etcd"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedIncidents]:
    if request.param == "sqlite":
        store = IncidentStore(tmp_path)
        yield SqliteSharedIncidents(store)
        store.close()
        return
    srv: EtcdServer = request.getfixturevalue("etcd_srv")
    etcd = Etcd([srv.endpoint], timeout=2.0)
    ns, fence = await _leader(etcd)
    yield EtcdSharedIncidents(etcd, ns, lambda: fence)
    await etcd.close()


async def test_an_incident_reads_back_as_saved_and_a_later_save_replaces_it(
    shared: SharedIncidents,
) -> None:
    """Saved incidents come back whole, oldest first; saving one again keeps the last."""
    first, second = incident(1, opened=200.0), incident(2, opened=100.0)
    await shared.save([first, second])
    acting = first.with_(phase=Phase.ACTING, acted_at=210.0, current_targets=("i-1",))
    await shared.save([acting])
    assert await shared.incidents() == [second, acting]


async def test_retired_instances_and_roles_are_kept(shared: SharedIncidents) -> None:
    """Retired instances accumulate; a database role remembered again is replaced."""
    await shared.retire(["i-1", "i/2"], 10.0)
    await shared.retire(["i-3"], 11.0)
    await shared.remember_roles({"i-7": "primary", "i-8": "replica"})
    await shared.remember_roles({"i-8": "primary"})
    assert await shared.retired() == frozenset({"i-1", "i/2", "i-3"})
    assert await shared.roles() == {"i-7": "primary", "i-8": "primary"}


async def test_a_ticks_incidents_and_retirements_are_saved_together(
    shared: SharedIncidents,
) -> None:
    """`save` with retired instances (a tick's writes, shared before acting): both sides
    keep both."""
    await shared.save([incident(5, phase=Phase.ACTING)], ["i-5"], 42.0)
    assert [i.id for i in await shared.incidents()] == [incident(5).id]
    assert "i-5" in await shared.retired()


async def test_a_deposed_leader_cannot_share_incidents(etcd_srv: EtcdServer) -> None:
    """Once the leader key is no longer the one won, every incident write is refused."""
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    try:
        ns, fence = await _leader(etcd)
        shared = EtcdSharedIncidents(etcd, ns, lambda: fence)
        await shared.save([incident(1)])
        await etcd.delete_prefix(f"/{ns}/leader")
        await etcd.put(f"/{ns}/leader", b'{"name": "w2"}')
        with pytest.raises(NotLeaderError):
            await shared.save([incident(1, phase=Phase.ACTING)])
        with pytest.raises(NotLeaderError):
            await shared.retire(["i-1"], 1.0)
        assert [i.state for i in await shared.incidents()] == [IncidentState.OPEN]
    finally:
        await etcd.close()


async def test_a_new_leader_pulls_what_the_old_one_pushed(
    etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """The old leader's local changes reach etcd; the next leader's copy gets them all,
    and its own push afterwards writes only what it changed."""
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    old_store, new_store = IncidentStore(tmp_path / "w1"), IncidentStore(tmp_path / "w2")
    try:
        ns, fence = await _leader(etcd)
        shared = EtcdSharedIncidents(etcd, ns, lambda: fence)
        old, new = IncidentMirror(old_store, shared), IncidentMirror(new_store, shared)
        old_store.save(incident(1))
        old_store.save(incident(2, phase=Phase.ACTING, acted_at=150.0))
        old_store.retire(["i-9"], "inc-x", 140.0)
        old_store.remember_db_roles({"i-7": "primary"})
        assert await old.push(160.0) == 2
        assert await old.push(161.0) == 0  # nothing changed since

        assert await new.pull() == 2
        assert [i.id for i in new_store.open_incidents()] == [incident(1).id, incident(2).id]
        assert new_store.get(incident(2).id) == incident(2, phase=Phase.ACTING, acted_at=150.0)
        assert new_store.retired() == frozenset({"i-9"})
        assert new_store.db_roles() == {"i-7": "primary"}
        assert await new.push(170.0) == 0
        new_store.save(incident(1, phase=Phase.ENDED, closed_at=171.0))
        assert await new.push(172.0) == 1
        assert await old.pull() == 1
        assert old_store.open_incidents() == [incident(2, phase=Phase.ACTING, acted_at=150.0)]
    finally:
        old_store.close()
        new_store.close()
        await etcd.close()


async def test_closed_incidents_leave_etcd_after_their_retention_but_stay_in_local_history(
    etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """Retention 1 h: at 10,000 s the leader prunes the incident closed at 200 s from
    etcd (in batches, fenced), keeps the one closed at 9,000 s and the open one; the
    follower's copy still holds the pruned one (its history), and neither push nor pull
    brings it back to etcd."""
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    stores = IncidentStore(tmp_path / "w1"), IncidentStore(tmp_path / "w2")
    try:
        ns, fence = await _leader(etcd)
        shared = EtcdSharedIncidents(etcd, ns, lambda: fence)
        leader = IncidentMirror(stores[0], shared, retention=3600.0)
        follower = IncidentMirror(stores[1], shared, retention=3600.0)
        old = incident(1, phase=Phase.ENDED, closed_at=200.0)
        recent = incident(2, phase=Phase.ENDED, closed_at=9000.0)
        still_open = incident(3)
        for inc in (old, recent, still_open):
            stores[0].save(inc)
        assert await leader.push(300.0) == 3  # shared while within their retention
        assert await follower.pull() == 3

        assert await leader.prune(10_000.0) == 1
        assert [i.id for i in await shared.incidents()] == [recent.id, still_open.id]
        assert await leader.prune(10_001.0) == 0  # not looked at again before PRUNE_EVERY
        assert await leader.push(10_002.0) == 0  # the pruned one is not pushed back
        await follower.pull()
        assert stores[1].get(old.id) == old  # the follower's history keeps it
        assert {i.id for i in stores[1].recent(limit=10)} == {old.id, recent.id, still_open.id}

        await etcd.put(f"/{ns}/leader", b'{"name": "w2"}')  # deposed: a new leader key
        await etcd.delete_prefix(f"/{ns}/leader")
        with pytest.raises(NotLeaderError):
            await shared.forget([recent.id])
    finally:
        for store in stores:
            store.close()
        await etcd.close()


async def test_pruning_goes_in_batches_etcd_accepts(etcd_srv: EtcdServer) -> None:
    """More expired incidents than one etcd transaction may hold (128 operations): all go."""
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    try:
        ns, fence = await _leader(etcd)
        shared = EtcdSharedIncidents(etcd, ns, lambda: fence)
        many = [incident(n, phase=Phase.ENDED, closed_at=100.0) for n in range(250)]
        for start in range(0, len(many), 50):
            await shared.save(many[start : start + 50])
        await shared.forget([i.id for i in many])
        assert await shared.incidents() == []
    finally:
        await etcd.close()
