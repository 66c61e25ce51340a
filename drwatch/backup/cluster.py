"""Backups with several watchers: the leader takes them, every watcher shows them.

The design (docs/backups.md, "Several watchers"), in the same shape as incidents
(drwatch.cluster.incidents):

- **One catalogue, in etcd.** Every watcher keeps its SQLite catalogue and restore-test
  log as a *copy*; the leader's copy is the one that changes, and what it changes goes
  to etcd (`backups/catalogue/<backup>/<location>`, `backups/restore_tests/<...>`) in
  transactions fenced by the leader key, like the playbook journal. Followers replace
  their copy with etcd's every second, so `GET /api/v1/backups`, `drwatch backups`, the
  RPO findings and the metrics show the same verified backups on every watcher.
- **Only the leader runs jobs.** `BackupLeader.run` starts the schedule when this
  watcher wins (after pulling the shared catalogue and resuming interrupted runs, so the
  new leader's first runs follow the old leader's last ones) and shuts it down when the
  watcher stops leading; APScheduler cancels the runs in flight.
- **Fenced side effects.** Before every side effect of a run (an object written or
  deleted, a freeze, a snapshot or image copied, a dump started on a host) `gate` writes
  what the catalogue has pending (the run's `pending` row first) to etcd in one fenced
  transaction: a leader that etcd has replaced is refused there, however late it wakes,
  and its run stops before that side effect (NotLeaderError). The catalogue's own writes
  are checked locally first (`Election.fence`: the lease confirmed in time). A run cut
  short stays `pending` in etcd; the next leader's `resume` marks it failed, deletes its
  objects and aborts its multipart uploads: nothing is half-counted.
- **No false RPO alarm from a follower.** A watcher that has not yet read the shared
  catalogue reports no backup findings (it has nothing of its own to judge by); once it
  has, its findings are the leader's, from the same rows and the same clock rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import structlog

from drwatch.backup.catalogue import Entry, SqliteCatalogue
from drwatch.backup.restore_schedule import RestoreResult, RestoreTestLog
from drwatch.cluster.errors import EtcdRefusedError, EtcdUnavailableError, NotLeaderError
from drwatch.cluster.etcd import Delete, Etcd, KeyValue, Put
from drwatch.cluster.leader import Fence, Leadership
from drwatch.model.fleet import Instance
from drwatch.providers.base import ImageInfo, SnapshotInfo, VolumeInfo

if TYPE_CHECKING:  # fleet imports the service, which imports this module
    from drwatch.backup.fleet import Agents, Cloud, FleetDeps

# etcd refuses a transaction of more than 128 operations by default (--max-txn-ops).
TXN_OPS = 100
FOLLOW_EVERY_S = 1.0
_ETCD_ERRORS = (EtcdUnavailableError, EtcdRefusedError)
# Agent actions that end a side effect rather than make one: always allowed.
_UNGATED_ACTIONS = frozenset({"thaw"})
Gate = Callable[[str], Awaitable[None]]


def _log() -> Any:
    return structlog.get_logger("drwatch.backup")


class Leading(Protocol):
    """The election as backups see it (drwatch.cluster.leader.Election)."""

    @property
    def state(self) -> Leadership: ...

    def fence(self) -> Fence: ...


# -- the etcd side -------------------------------------------------------------------------


class BackupBoard:
    """The shared catalogue and restore-test results under /<namespace>/backups/."""

    def __init__(self, etcd: Etcd, namespace: str) -> None:
        self._etcd = etcd
        self._catalogue = f"/{namespace}/backups/catalogue/"
        self._tests = f"/{namespace}/backups/restore_tests/"

    def entry_key(self, backup_id: str, location: str) -> str:
        return f"{self._catalogue}{_q(backup_id)}/{_q(location)}"

    def test_key(self, r: RestoreResult) -> str:
        return f"{self._tests}{r.at:020.6f}/{_q(r.data_class)}/{_q(r.location)}"

    async def entries(self) -> list[Entry]:
        return [e for kv in await self._etcd.get_prefix(self._catalogue) if (e := _entry(kv))]

    async def results(self) -> list[RestoreResult]:
        found = []
        for kv in await self._etcd.get_prefix(self._tests):
            try:
                found.append(RestoreResult(**json.loads(kv.value)))
            except (ValueError, TypeError) as err:
                _log().error("backup.shared_unreadable", key=kv.key, error=str(err))
        return found

    async def write(self, fence: Fence, ops: list[Put | Delete]) -> None:
        """`ops` in fenced transactions of at most TXN_OPS each (one, empty, when there
        is nothing to write: the fence is still checked at etcd)."""
        batches = [ops[i : i + TXN_OPS] for i in range(0, len(ops), TXN_OPS)] or [[]]
        for batch in batches:
            if not await self._etcd.txn([fence.holds()], batch):
                raise NotLeaderError(
                    f"deposed: the leader key is no longer revision {fence.revision}; "
                    f"refused to share {len(batch)} backup record(s)"
                )


def _entry(kv: KeyValue) -> Entry | None:
    try:
        return Entry.from_record(json.loads(kv.value))
    except (ValueError, KeyError, TypeError) as err:
        # Written by a newer drwatch, say: left out and left alone.
        _log().error("backup.shared_unreadable", key=kv.key, error=f"{type(err).__name__}: {err}")
        return None


def _q(part: str) -> str:
    return quote(part, safe="")


# -- this watcher's copies -----------------------------------------------------------------


class SharedCatalogue:
    """The `Catalogue` every backup part uses: this watcher's SQLite copy, written only
    while it leads (`check` raises NotLeaderError otherwise), each change queued for
    etcd; `replace` makes the copy what etcd holds."""

    def __init__(self, local: SqliteCatalogue, check: Callable[[], object]) -> None:
        self.local = local
        self._check = check
        self.dirty: dict[tuple[str, str], Entry | None] = {}  # None: forgotten

    def record(self, entry: Entry) -> None:
        self._check()
        self.local.record(entry)
        self.dirty[(entry.backup_id, entry.location)] = entry

    def forget(self, backup_id: str, location: str) -> None:
        self._check()
        self.local.forget(backup_id, location)
        self.dirty[(backup_id, location)] = None

    def get(self, backup_id: str, location: str) -> Entry | None:
        return self.local.get(backup_id, location)

    def entries(self, data_class: str | None = None) -> list[Entry]:
        return self.local.entries(data_class)

    def replace(self, entries: Iterable[Entry]) -> int:
        """Make the local copy exactly `entries`; how many rows changed."""
        want = {(e.backup_id, e.location): e for e in entries}
        changed = 0
        for e in self.local.entries():
            if (e.backup_id, e.location) not in want:
                self.local.forget(e.backup_id, e.location)
                changed += 1
        for key, e in want.items():
            if self.local.get(*key) != e:
                self.local.record(e)
                changed += 1
        self.dirty.clear()
        return changed

    def close(self) -> None:
        self.local.close()


class SharedRestoreLog(RestoreTestLog):
    """The restore-test log, shared the same way (results are only ever added)."""

    def __init__(self, state_dir: Path, check: Callable[[], object]) -> None:
        super().__init__(state_dir)
        self._check = check
        self.dirty: list[RestoreResult] = []

    def record(self, r: RestoreResult) -> None:
        self._check()
        super().record(r)
        self.dirty.append(r)

    def merge(self, results: Iterable[RestoreResult]) -> int:
        """Add the results this copy lacks; how many."""
        rows = self._db.execute("SELECT at, data_class, location FROM restore_tests")
        known = {(float(at), str(c), str(loc)) for at, c, loc in rows}
        added = 0
        for r in results:
            if (r.at, r.data_class, r.location) not in known:
                super().record(r)
                added += 1
        return added


class BackupSharing:
    """This watcher's copies, etcd's, and the gate every side effect passes."""

    def __init__(
        self, leading: Leading, board: BackupBoard, state_dir: Path, clock: Callable[[], float]
    ) -> None:
        self.leading = leading
        self.board = board
        # The term whose jobs run here (0: none): a run started in one term never writes
        # in another, even when this watcher wins again.
        self.term = 0
        self.catalogue = SharedCatalogue(SqliteCatalogue(state_dir), self.check)
        self.restore_log = SharedRestoreLog(state_dir, self.check)
        self._clock = clock
        self.synced_at: float | None = None  # the last exchange with etcd that succeeded
        self.error = ""

    @property
    def ready(self) -> bool:
        """This copy has been made from etcd's (or this watcher has led): it may judge."""
        return self.synced_at is not None

    def check(self) -> Fence:
        """The fence to write with: this watcher leads, in the term its jobs run in."""
        fence = self.leading.fence()
        if fence.revision != self.term:
            running = f"term {self.term}" if self.term else "no term"
            raise NotLeaderError(
                f"backups here run in {running}; this watcher leads term {fence.revision}"
            )
        return fence

    async def gate(self, what: str) -> None:
        """Before a side effect: this watcher leads, and etcd has taken every row it
        wrote so far (the run's `pending` row first). NotLeaderError otherwise."""
        try:
            await self.push()
        except NotLeaderError as err:
            _log().warning("backup.fenced", before=what, reason=str(err))
            raise
        except _ETCD_ERRORS as err:
            raise NotLeaderError(f"cannot reach etcd before {what}: {err}") from None

    async def push(self) -> None:
        """Send the queued changes in fenced transactions; kept queued when refused."""
        fence = self.check()
        entries = dict(self.catalogue.dirty)
        tests = list(self.restore_log.dirty)
        ops: list[Put | Delete] = [
            Put(self.board.entry_key(*k), _dump(e.to_record()))
            if e is not None
            else Delete(self.board.entry_key(*k))
            for k, e in entries.items()
        ]
        ops += [Put(self.board.test_key(r), _dump(r.to_dict())) for r in tests]
        await self.board.write(fence, ops)
        for k, e in entries.items():
            if self.catalogue.dirty.get(k, e) is e:
                self.catalogue.dirty.pop(k, None)
        del self.restore_log.dirty[: len(tests)]
        self._synced()

    async def pull(self) -> int:
        """Make this watcher's copies what etcd holds; how many rows changed."""
        entries = await self.board.entries()
        results = await self.board.results()
        changed = self.catalogue.replace(entries) + self.restore_log.merge(results)
        self._synced()
        return changed

    async def take_over(self) -> None:
        """A new leader's first exchange: etcd's catalogue becomes its copy; when etcd
        holds none yet (the first leader, or backups that ran alone before [cluster]),
        its own copy seeds etcd instead."""
        entries = await self.board.entries()
        if entries:
            self.catalogue.replace(entries)
            self.restore_log.merge(await self.board.results())
        else:
            for e in self.catalogue.local.entries():
                self.catalogue.dirty[(e.backup_id, e.location)] = e
        await self.push()

    def _synced(self) -> None:
        self.synced_at = self._clock()
        self.error = ""

    def status(self) -> dict[str, Any]:
        lead = self.leading.state
        return {
            "shared": True,
            "leader": lead.leader,
            "runs_backups": lead.acting,
            "synced_at": self.synced_at,
            "pending_rows": len(self.catalogue.dirty) + len(self.restore_log.dirty),
            "error": self.error,
        }

    def close(self) -> None:
        self.catalogue.close()
        self.restore_log.close()


def _dump(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


# -- who runs the jobs -----------------------------------------------------------------------


class Schedule(Protocol):
    def shutdown(self) -> None: ...


class BackupLeader:
    """Starts the backup jobs when this watcher leads, stops them when it does not; keeps
    the copies in step with etcd either way (see the module doc)."""

    def __init__(
        self,
        sharing: BackupSharing,
        start_jobs: Callable[[], Schedule],
        resume: Callable[[], Awaitable[list[Entry]]],
        refresh: Callable[[], None],
        every: float = FOLLOW_EVERY_S,
    ) -> None:
        self.sharing = sharing
        self._start_jobs = start_jobs
        self._resume = resume
        self._refresh = refresh
        self._every = every
        self._schedule: Schedule | None = None

    @property
    def term(self) -> int:
        return self.sharing.term

    async def run(self) -> None:
        try:
            while True:
                await self.step()
                await asyncio.sleep(self._every)
        finally:
            self.stop("stopping")

    async def step(self) -> None:
        """One look at who leads, and one exchange with etcd."""
        lead = self.sharing.leading.state
        try:
            if lead.acting and self.term != lead.term:
                await self._take_over(lead)
            elif not lead.acting and self.term:
                self.stop(f"no longer leads: {lead.reason}")
            if self.term:
                await self.sharing.push()
            elif await self.sharing.pull():
                self._refresh()
        except NotLeaderError as err:
            self.stop(str(err))
        except _ETCD_ERRORS as err:
            if not self.sharing.error:
                _log().warning("backup.shared_state_failed", reason=str(err))
            self.sharing.error = str(err)

    async def _take_over(self, lead: Leadership) -> None:
        self.stop("a new term")
        self.sharing.term = lead.term
        try:
            await self.sharing.take_over()
            interrupted = await self._resume()
            await self.sharing.push()
        except BaseException:
            self.sharing.term = 0  # taken over next step, from the start
            raise
        self._refresh()
        self._schedule = self._start_jobs()
        _log().info("backup.leading", term=lead.term, interrupted_rows=len(interrupted))

    def stop(self, why: str) -> None:
        """Shut the schedule down (APScheduler cancels the runs in flight); from now on
        a run still on its way is refused at its next write."""
        term, self.sharing.term = self.sharing.term, 0
        if self._schedule is not None:
            self._schedule.shutdown()
            self._schedule = None
            _log().warning("backup.jobs_stopped", term=term, reason=why)


# -- fenced adapters: every side effect passes the gate ------------------------------------


class FencedStore:
    """An ObjectStore whose writes pass the gate first; reads go straight through."""

    def __init__(self, store: Any, gate: Gate) -> None:
        self._store = store
        self._gate = gate
        self.name: str = store.name

    async def create_multipart(self, key: str) -> str:
        await self._gate(f"upload {key}")
        return str(await self._store.create_multipart(key))

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        await self._gate(f"upload {key} part {number}")
        return str(await self._store.upload_part(key, upload_id, number, data))

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None:
        await self._gate(f"complete {key}")
        await self._store.complete_multipart(key, upload_id, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._gate(f"abort {key}")
        await self._store.abort_multipart(key, upload_id)

    async def put(self, key: str, data: bytes) -> None:
        await self._gate(f"put {key}")
        await self._store.put(key, data)

    async def delete(self, key: str) -> None:
        await self._gate(f"delete {key}")
        await self._store.delete(key)

    async def size(self, key: str) -> int | None:
        got: int | None = await self._store.size(key)
        return got

    def read(self, key: str, block: int) -> Any:
        return self._store.read(key, block)

    async def keys(self, prefix: str) -> list[str]:
        return list(await self._store.keys(prefix))

    async def open_uploads(self, prefix: str) -> list[tuple[str, str]]:
        return list(await self._store.open_uploads(prefix))


@dataclasses.dataclass(frozen=True)
class FencedAgents:
    """Agent actions (a dump, an archive, a freeze) pass the gate; a thaw never waits."""

    agents: Agents
    gate: Gate

    async def action(
        self, instance: Instance, name: str, params: Mapping[str, str], timeout_s: float = 30.0
    ) -> dict[str, object]:
        if name not in _UNGATED_ACTIONS:
            await self.gate(f"{name} on {instance.name}")
        return await self.agents.action(instance, name, params, timeout_s)


@dataclasses.dataclass(frozen=True)
class FencedCloud:
    """The provider calls of backups; the ones that change something pass the gate."""

    cloud: Cloud
    gate: Gate

    async def volumes(self, region: str) -> list[VolumeInfo]:
        return await self.cloud.volumes(region)

    async def snapshots(self, region: str) -> list[SnapshotInfo]:
        return await self.cloud.snapshots(region)

    async def images(self, region: str) -> list[ImageInfo]:
        return await self.cloud.images(region)

    async def create_snapshot(
        self, region: str, volume_id: str, tags: tuple[tuple[str, str], ...]
    ) -> str:
        await self.gate(f"snapshot {volume_id}")
        return await self.cloud.create_snapshot(region, volume_id, tags)

    async def copy_snapshot(
        self, region: str, source_region: str, snapshot_id: str, tags: tuple[tuple[str, str], ...]
    ) -> str:
        await self.gate(f"copy {snapshot_id} to {region}")
        return await self.cloud.copy_snapshot(region, source_region, snapshot_id, tags)

    async def delete_snapshot(self, region: str, snapshot_id: str) -> None:
        await self.gate(f"delete {snapshot_id}")
        await self.cloud.delete_snapshot(region, snapshot_id)

    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str:
        await self.gate(f"copy {image_id} to {region}")
        return await self.cloud.copy_image(region, source_region, image_id, name, client_token)


def fenced_deps(deps: FleetDeps, gate: Gate) -> FleetDeps:
    return dataclasses.replace(
        deps, agents=FencedAgents(deps.agents, gate), cloud=FencedCloud(deps.cloud, gate)
    )


def sharing_for(etcd: Etcd, namespace: str, leading: Leading, state_dir: Path) -> BackupSharing:
    return BackupSharing(leading, BackupBoard(etcd, namespace), state_dir, time.time)
