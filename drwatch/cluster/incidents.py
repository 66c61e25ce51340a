"""Incidents shared between watchers: the seam, its SQLite and etcd sides, and the mirror.

The cycle is synchronous and keeps its incidents in the local `IncidentStore`; with
`[cluster]` that store is this watcher's copy of what etcd holds:

- the leader's copy is the one that changes: each of its ticks' writes goes to etcd
  first (`IncidentMirror.share`, one transaction fenced by the leader key like the
  journal's: a deposed leader's write is refused), then to the local copy, and only then
  does the cycle submit plans (ClusterNode.write_through); after the tick
  `IncidentMirror.push` writes whatever else changed (database roles, a pulled record);
- when a watcher wins, it `pull`s everything etcd holds into its copy before its first
  tick as leader, so it sees every open incident the old leader had published, and its
  runner resumes the old leader's unfinished runs from the shared journal;
- followers `pull` every tick, so their status page and API show the leader's incidents;
- the leader `prune`s incidents closed longer than `[cluster] incident_retention` ago
  from etcd (every PRUNE_EVERY), so what each pull reads stays bounded; a watcher's local
  copy keeps them (a pull leaves alone what etcd no longer holds): its history.

An incident is serialised by its own `to_dict`/`from_dict` (the form the SQLite store
keeps), so the two sides never disagree on what an incident is.

So a leader killed mid-tick has either shared the tick's incident records and then
acted, or not acted at all: the new leader sees every incident a run was started for.
Its journal writes are fenced in etcd as well, and the runner ignores a plan for an
incident whose resumed run is in flight: the side effects happen once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote, unquote

from drwatch.cluster.errors import NotLeaderError
from drwatch.cluster.etcd import Delete, Etcd, KeyValue, Put
from drwatch.cluster.leader import Fence
from drwatch.incidents import IncidentStore, Retirement, Writes
from drwatch.logs import get_logger
from drwatch.model.incident import Incident

log = get_logger(component="cluster.incidents")

# How many recently closed incidents the mirror compares each push (besides open ones):
# an incident closes in a tick, so the one that closed it is among the newest.
RECENT = 50
# How often the leader looks for closed incidents past their retention in etcd.
PRUNE_EVERY = 600.0
# etcd refuses a transaction of more than 128 operations (--max-txn-ops): the fence
# compare and at most this many deletes per transaction.
PRUNE_BATCH = 100
SHARED_RETIREMENT = "(shared)"


class SharedIncidents(Protocol):
    """Where incidents, retired instances and remembered database roles are kept so that
    any watcher can read them. Writes may be fenced (NotLeaderError)."""

    async def save(
        self, incidents: Sequence[Incident], retired: Sequence[str] = (), at: float = 0.0
    ) -> None:
        """The incidents, and the instances retired at `at`, in one write."""

    async def incidents(self) -> list[Incident]: ...
    async def retire(self, instance_ids: Iterable[str], at: float) -> None: ...
    async def forget(self, incident_ids: Sequence[str]) -> None:
        """Drop these incidents from the shared side (closed ones past their retention)."""

    async def retired(self) -> frozenset[str]: ...
    async def remember_roles(self, roles: Mapping[str, str]) -> None: ...
    async def roles(self) -> dict[str, str]: ...


class SqliteSharedIncidents:
    """One watcher: the incident store itself (nothing to share it with). Calls are
    single indexed rows, run in place like the cycle's."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    async def save(
        self, incidents: Sequence[Incident], retired: Sequence[str] = (), at: float = 0.0
    ) -> None:
        self.store.write(
            Writes(
                incidents=tuple(incidents),
                retired=(Retirement(tuple(retired), SHARED_RETIREMENT, at),) if retired else (),
            )
        )

    async def incidents(self) -> list[Incident]:
        return sorted(self.store.recent(limit=1_000_000), key=lambda i: (i.opened_at, i.id))

    async def retire(self, instance_ids: Iterable[str], at: float) -> None:
        self.store.retire(instance_ids, SHARED_RETIREMENT, at)

    async def forget(self, incident_ids: Sequence[str]) -> None:
        return None  # one watcher: its store is the history, nothing to prune

    async def retired(self) -> frozenset[str]:
        return self.store.retired()

    async def remember_roles(self, roles: Mapping[str, str]) -> None:
        self.store.remember_db_roles(roles)

    async def roles(self) -> dict[str, str]:
        return self.store.db_roles()


class EtcdSharedIncidents:
    """Several watchers: incidents/<id>, retired/<instance>, roles/<instance> under the
    namespace, every write one etcd transaction under the leader's fence."""

    def __init__(self, etcd: Etcd, namespace: str, fence: Callable[[], Fence]) -> None:
        self._etcd = etcd
        self._fence = fence
        self._incidents = f"/{namespace}/incidents/"
        self._retired = f"/{namespace}/retired/"
        self._roles = f"/{namespace}/roles/"

    async def _write(self, puts: Sequence[Put | Delete]) -> None:
        if not puts:
            return
        fence = self._fence()
        if not await self._etcd.txn([fence.holds()], puts):
            raise NotLeaderError(
                f"deposed: the leader key is no longer revision {fence.revision}; "
                f"refused to share {len(puts)} incident record(s)"
            )

    async def save(
        self, incidents: Sequence[Incident], retired: Sequence[str] = (), at: float = 0.0
    ) -> None:
        puts = [Put(self._incidents + _q(i.id), _dump(i.to_dict())) for i in incidents]
        body = _dump({"at": at})
        await self._write(puts + [Put(self._retired + _q(i), body) for i in retired])

    async def incidents(self) -> list[Incident]:
        found = []
        for kv in await self._all(self._incidents):
            try:
                found.append(Incident.from_dict(json.loads(kv.value)))
            except (ValueError, KeyError, TypeError) as err:
                # Written by a newer drwatch, say: left out and left alone, as in SQLite.
                log.error("incident.unreadable", key=kv.key, error=f"{type(err).__name__}: {err}")
        return sorted(found, key=lambda i: (i.opened_at, i.id))

    async def retire(self, instance_ids: Iterable[str], at: float) -> None:
        body = _dump({"at": at})
        await self._write([Put(self._retired + _q(i), body) for i in instance_ids])

    async def forget(self, incident_ids: Sequence[str]) -> None:
        for start in range(0, len(incident_ids), PRUNE_BATCH):
            batch = incident_ids[start : start + PRUNE_BATCH]
            await self._write([Delete(self._incidents + _q(i)) for i in batch])

    async def retired(self) -> frozenset[str]:
        return frozenset(_tail(kv.key, self._retired) for kv in await self._all(self._retired))

    async def remember_roles(self, roles: Mapping[str, str]) -> None:
        await self._write([Put(self._roles + _q(i), role.encode()) for i, role in roles.items()])

    async def roles(self) -> dict[str, str]:
        kvs = await self._all(self._roles)
        return {_tail(kv.key, self._roles): kv.value.decode() for kv in kvs}

    async def _all(self, prefix: str) -> list[KeyValue]:
        return await self._etcd.get_prefix(prefix)


class IncidentMirror:
    """Keeps the local store (the cycle's) and the shared one in step; see the module doc."""

    def __init__(
        self, local: IncidentStore, shared: SharedIncidents, retention: float | None = None
    ) -> None:
        self.local = local
        self.shared = shared
        # Closed longer ago than this: pruned from the shared side, never pushed again.
        self.retention = retention
        self._pruned_at: float | None = None
        self._sent: dict[str, str] = {}  # incident id -> the body the shared side holds
        self._sent_retired: frozenset[str] = frozenset()
        self._sent_roles: dict[str, str] = {}

    async def pull(self) -> int:
        """Make the local copy what the shared side holds; returns how many incidents
        changed locally. Local incidents the shared side does not know are left alone."""
        pulled: list[Incident] = []
        for inc in await self.shared.incidents():
            body = _body(inc)
            current = self.local.get(inc.id)
            if current is None or _body(current) != body:
                pulled.append(inc)
            self._sent[inc.id] = body
        retired = await self.shared.retired()
        roles = await self.shared.roles()
        newly = tuple(sorted(retired - self.local.retired()))
        # One transaction, as a tick's own writes are (IncidentStore.write).
        self.local.write(
            Writes(
                incidents=tuple(pulled),
                retired=(Retirement(newly, SHARED_RETIREMENT, 0.0),) if newly else (),
            )
        )
        self.local.remember_db_roles(roles)
        changed = len(pulled)
        self._sent_retired = retired
        self._sent_roles = dict(roles)
        return changed

    async def share(self, writes: Writes) -> None:
        """A tick's writes, to the shared side before the local copy (one fenced write).
        Raises NotLeaderError when this watcher was deposed: then nothing was shared."""
        ids = sorted({i for r in writes.retired for i in r.instance_ids} - self._sent_retired)
        at = max((r.at for r in writes.retired), default=0.0)
        await self.shared.save(writes.incidents, ids, at)
        for inc in writes.incidents:
            self._sent[inc.id] = _body(inc)
        self._sent_retired = self._sent_retired | frozenset(ids)

    async def push(self, now: float) -> int:
        """Share what changed locally since the last pull or push; returns how many
        incidents were written. Raises NotLeaderError when this watcher was deposed."""
        changed = [
            i
            for i in self._candidates()
            if self._sent.get(i.id) != _body(i) and not self._expired(i, now)
        ]
        await self.shared.save(changed)
        for inc in changed:
            self._sent[inc.id] = _body(inc)
        retired = self.local.retired()
        await self.shared.retire(sorted(retired - self._sent_retired), now)
        self._sent_retired = retired
        roles = self.local.db_roles()
        new_roles = {k: v for k, v in roles.items() if self._sent_roles.get(k) != v}
        if new_roles:
            await self.shared.remember_roles(new_roles)
            self._sent_roles.update(new_roles)
        return len(changed)

    async def prune(self, now: float) -> int:
        """Delete from the shared side the incidents closed more than `retention` ago
        (at most once per PRUNE_EVERY); returns how many. Fenced like every write."""
        if self.retention is None:
            return 0
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return 0
        old = [i.id for i in await self.shared.incidents() if self._expired(i, now)]
        await self.shared.forget(old)
        self._pruned_at = now
        if old:
            log.info("incidents.pruned", count=len(old), retention_s=self.retention)
        return len(old)

    def _expired(self, inc: Incident, now: float) -> bool:
        return (
            self.retention is not None
            and inc.closed_at is not None
            and inc.closed_at < now - self.retention
        )

    def _candidates(self) -> list[Incident]:
        seen: dict[str, Incident] = {i.id: i for i in self.local.recent(limit=RECENT)}
        seen.update((i.id, i) for i in self.local.open_incidents())
        return list(seen.values())


def _q(part: str) -> str:
    return quote(part, safe="")


def _tail(key: str, prefix: str) -> str:
    return unquote(key[len(prefix) :])


def _dump(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def _body(inc: Incident) -> str:
    return json.dumps(inc.to_dict(), sort_keys=True)


__all__ = [
    "EtcdSharedIncidents",
    "IncidentMirror",
    "SharedIncidents",
    "SqliteSharedIncidents",
]
