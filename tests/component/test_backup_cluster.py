"""Backups with several watchers (drwatch.backup.cluster): only the leader runs them,
every watcher shows the same catalogue, and a deposed leader's run stops before its next
side effect without leaving a half-counted backup. Real etcd, two moto servers, gpg."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drwatch.backup.catalogue import Entry
from drwatch.backup.cluster import BackupSharing, FencedStore, sharing_for
from drwatch.backup.config import BackupConfig, DataClass
from drwatch.backup.model import State
from drwatch.backup.restore_schedule import RestoreResult
from drwatch.backup.service import BackupService, open_service
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from drwatch.cluster.errors import NotLeaderError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.leader import Election, Fence, Leadership, Role
from tests.component.test_backup_pipeline import blocks
from tests.component.test_backup_service import (
    LOCATIONS,
    RPOS,
    backup_config,
    dump_source,
    make_buckets,
)
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    gpg_keys,
    offsite,
    offsite_session,
)
from tests.support.etcd import EtcdServer, etcd_server, member_config, until

pytestmark = pytest.mark.services
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def etcd_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path_factory.mktemp("etcd")) as srv:
        yield srv


@dataclass
class Backups:
    """Each test's backup config (its buckets made) and its own etcd namespace."""

    cfg: BackupConfig
    namespace: str


@pytest.fixture
async def backups(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> Backups:
    cfg = backup_config(moto, offsite, gpg_keys, tmp_path)
    await make_buckets(cfg)
    return Backups(cfg, f"t-{secrets.token_hex(4)}")


@dataclass
class Watcher:
    name: str
    election: Election
    sharing: BackupSharing
    service: BackupService
    stop: Callable[[], Any]

    @property
    def leads(self) -> bool:
        return self.election.state.acting and self.sharing.term != 0


@asynccontextmanager
async def watcher(
    srv: EtcdServer,
    namespace: str,
    name: str,
    cfg: BackupConfig,
    state: Path,
    *,
    source: Callable[[str, DataClass], Any] = dump_source,
) -> AsyncIterator[Watcher]:
    """One watcher's election and backup service, each loop in its own task."""
    cluster = member_config(srv.endpoint, name).model_copy(update={"namespace": namespace})
    etcd = Etcd(cluster.endpoints, timeout=cluster.request_timeout)
    election = Election(etcd, cluster)
    sharing = sharing_for(etcd, namespace, election, state)
    async with open_service(cfg, RPOS, state, sources={"dump": source}, sharing=sharing) as svc:
        assert svc.leader is not None
        tasks = [asyncio.create_task(election.run()), asyncio.create_task(svc.leader.run())]

        async def stop() -> None:
            for t in reversed(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            yield Watcher(name, election, sharing, svc, stop)
        finally:
            await stop()
            await etcd.close()


def verified(service: BackupService) -> set[tuple[str, str]]:
    return {
        (e.backup_id, e.location) for e in service.catalogue.entries() if e.state is State.VERIFIED
    }


def rows(service: BackupService) -> list[dict[str, object]]:
    """Every row, in one order (the catalogue orders by time, not by location)."""
    found = service.catalogue.entries()
    return [e.to_record() for e in sorted(found, key=lambda e: (e.backup_id, e.location))]


async def test_only_the_leader_backs_up_and_every_watcher_shows_the_same_catalogue(
    backups: Backups, etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """Two watchers, one etcd: the leader's dump job runs once, is verified at every
    location, and the follower, which ran nothing, shows the same rows, the same RPO
    status and no finding; its schedule never started."""
    cfg, ns = backups.cfg, backups.namespace
    async with AsyncExitStack() as stack:
        w1 = await stack.enter_async_context(watcher(etcd_srv, ns, "w1", cfg, tmp_path / "w1"))
        w2 = await stack.enter_async_context(watcher(etcd_srv, ns, "w2", cfg, tmp_path / "w2"))
        await until(lambda: w1.leads or w2.leads, 20.0)
        leader, follower = (w1, w2) if w1.leads else (w2, w1)
        await until(lambda: {loc for _, loc in verified(leader.service)} == LOCATIONS, 60.0)
        await until(lambda: rows(follower.service) == rows(leader.service), 10.0)

        assert follower.sharing.term == 0
        assert not follower.election.state.acting
        dumps = {e.backup_id for e in leader.service.catalogue.entries() if e.kind == "dump"}
        assert len(dumps) == 1, "one watcher ran the job, once"
        now = leader.service.catalogue.entries()[0].created_at + 1.0
        assert follower.service.doc(now)["classes"] == leader.service.doc(now)["classes"]
        assert follower.service.findings(now) == leader.service.findings(now) == []
        assert follower.service.doc(now)["sharing"]["runs_backups"] is False
        assert leader.service.doc(now)["sharing"]["runs_backups"] is True

        # A restore test's result, recorded where the leader ran it, shows everywhere.
        (dump_id,) = dumps
        result = RestoreResult(now, "orders", "primary", dump_id, True, 5000, 2.5, 30.0)
        leader.sharing.restore_log.record(result)
        await until(lambda: follower.sharing.restore_log.last(passed=True) == result, 10.0)
        with pytest.raises(NotLeaderError):
            follower.sharing.restore_log.record(result)
        with pytest.raises(NotLeaderError):
            follower.service.catalogue.record(leader.service.catalogue.entries()[0])


async def test_a_follower_judges_the_rpo_only_from_the_shared_catalogue(
    backups: Backups, etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """Before it has read the shared catalogue a watcher raises no backup finding (it
    ran no backups of its own to judge by); once read, it judges like the leader: here
    etcd holds none and the class has been watched longer than its RPO, so it is
    breached, as the leader would say."""
    cfg, ns = backups.cfg, backups.namespace
    cluster = member_config(etcd_srv.endpoint, "w9").model_copy(update={"namespace": ns})
    etcd = Etcd(cluster.endpoints, timeout=cluster.request_timeout)
    try:
        sharing = sharing_for(etcd, ns, Election(etcd, cluster), tmp_path / "w9")
        async with open_service(cfg, RPOS, tmp_path / "w9", sources={}, sharing=sharing) as svc:
            later = svc.objectives()[0].since + 2 * RPOS["orders"]
            assert svc.findings(later) == []
            assert svc.status_part(later)["findings"] == []
            await sharing.pull()
            breached = {(d.finding.value, d.location) for d in svc.findings(later)}
            assert breached == {("backup_rpo_breached", loc) for loc in LOCATIONS}
    finally:
        await etcd.close()


class Gate:
    """A dump source that stops after its first part until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def source(self, _name: str, _dc: DataClass) -> Source:
        async def stream() -> AsyncIterator[bytes]:
            async for block in blocks(6 * MIB):
                yield block
                if not self.started.is_set() and self._sent(len(block)):
                    self.started.set()
                    await self.release.wait()

        self._bytes = 0
        return Source(stream(), {"system_identifier": "7300"}, {"lsn": "0/1"})

    def _sent(self, n: int) -> bool:
        self._bytes += n
        return self._bytes > 5 * MIB + 1


async def open_uploads(cfg: BackupConfig) -> list[tuple[str, str]]:
    found = []
    for name, loc in cfg.locations.configured().items():
        async with S3Store(name, loc) as store:
            found += await store.open_uploads(loc.prefix)
    return found


async def test_a_run_in_flight_when_the_leader_is_deposed_is_never_half_counted(
    backups: Backups, etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """The leader's dump is halfway (one part uploaded, the next held) when its lease is
    revoked at etcd: it stops before its next write, the other watcher takes over,
    turns the interrupted run into `failed` (objects deleted, multipart upload aborted)
    and takes its own dump, which verifies everywhere. Both watchers then show that."""
    cfg, ns = backups.cfg, backups.namespace
    held = Gate()
    async with AsyncExitStack() as stack:
        w1 = await stack.enter_async_context(
            watcher(etcd_srv, ns, "w1", cfg, tmp_path / "w1", source=held.source)
        )
        await until(lambda: w1.leads, 20.0)
        w2 = await stack.enter_async_context(watcher(etcd_srv, ns, "w2", cfg, tmp_path / "w2"))
        async with asyncio.timeout(60):
            await held.started.wait()
        interrupted = next(e for e in w1.service.catalogue.entries() if e.kind == "dump")
        assert interrupted.state is State.PENDING
        async with asyncio.timeout(10):  # journaled at etcd before its first write
            while interrupted not in await w1.sharing.board.entries():  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        # Deposed: etcd drops the leader's lease, the key goes, the other watcher wins.
        etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
        stack.push_async_callback(etcd.close)
        await etcd.revoke(w1.election.lease)
        await until(lambda: w2.leads, 20.0)
        held.release.set()

        def settled(w: Watcher) -> bool:
            entry = w.service.catalogue.get(interrupted.backup_id, "primary")
            return entry is not None and entry.state is State.FAILED

        await until(lambda: settled(w2) and settled(w1), 20.0)
        await until(lambda: {loc for _, loc in verified(w2.service)} == LOCATIONS, 60.0)
        await until(lambda: rows(w1.service) == rows(w2.service), 10.0)

        assert interrupted.backup_id not in {b for b, _ in verified(w2.service)}
        failed = w2.service.catalogue.get(interrupted.backup_id, "primary")
        assert failed is not None
        assert "interrupted" in failed.why
        assert await open_uploads(cfg) == []
        async with S3Store("primary", cfg.locations.primary) as store:
            left = await store.keys(f"{cfg.locations.primary.prefix}")
        assert not [k for k in left if interrupted.backup_id in k]
        assert w1.sharing.term == 0


@dataclass
class Stale:
    """A leader that still believes it leads (paused, then woken up) with an old fence."""

    fence_: Fence

    @property
    def state(self) -> Leadership:
        return Leadership("w1", Role.LEADER, "w1", 0.0, self.fence_.revision, "believes")

    def fence(self) -> Fence:
        return self.fence_


async def test_a_deposed_leader_that_wakes_up_late_cannot_write(
    backups: Backups, etcd_srv: EtcdServer, tmp_path: Path
) -> None:
    """Its lease gone and another watcher's key in place, a leader that has not noticed
    yet is refused by etcd itself: the object it was about to write is not written, and
    the row it recorded stays out of the shared catalogue."""
    cfg, ns = backups.cfg, backups.namespace
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    key = f"/{ns}/leader"
    try:
        await etcd.put(key, b'{"name": "w1"}')
        old = await etcd.get(key)
        assert old is not None
        stale = Stale(Fence(key, old.create_revision))
        sharing = sharing_for(etcd, ns, stale, tmp_path / "w1")
        sharing.term = old.create_revision
        await etcd.delete_prefix(key)
        await etcd.put(key, b'{"name": "w2"}')

        sharing.catalogue.record(Entry("b-1", "orders", "dump", "primary", 1.0, State.PENDING))
        async with S3Store("primary", cfg.locations.primary) as raw:
            fenced = FencedStore(raw, sharing.gate)
            with pytest.raises(NotLeaderError, match="deposed"):
                await fenced.put("drwatch/x", b"data")
            assert await raw.size("drwatch/x") is None
        assert await sharing.board.entries() == []
        assert sharing.catalogue.dirty, "kept for a later push, never sent"
        sharing.close()
    finally:
        await etcd.close()
