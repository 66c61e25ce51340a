"""What the composition root builds from the config: who leads, and where shared state is.

`build(config, journal, incidents)` returns a `Shared`: with `[cluster]`, an etcd
election and the etcd stores (journal writes fenced by that election); without it,
`Alone` (this watcher always leads: the null implementation, so nothing downstream asks
"is there a cluster?") and the SQLite stores wrapping the files the watcher already has.
The daemon runs `shared.leadership.run()` in its task group and closes `shared` last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from drwatch.act.journal import Journal
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import EtcdControlStore, EtcdJournalStore, ViewBoard
from drwatch.cluster.incidents import EtcdSharedIncidents, SharedIncidents, SqliteSharedIncidents
from drwatch.cluster.leader import Election, Leadership, Role
from drwatch.cluster.sqlite_store import SqliteControlStore, SqliteJournalStore
from drwatch.cluster.store import ControlStore, JournalStore
from drwatch.config import ClusterConfig, Config
from drwatch.incidents import IncidentStore


class Leading(Protocol):
    """Who leads, for the cycle (act only when `state.acting`) and the status page."""

    @property
    def state(self) -> Leadership: ...

    async def run(self) -> None: ...


@dataclass
class Alone:
    """One watcher, no `[cluster]`: it always leads. Its journal is not fenced."""

    name: str
    since: float = field(default_factory=time.time)

    @property
    def state(self) -> Leadership:
        why = "one watcher (no [cluster] configured)"
        return Leadership(self.name, Role.LEADER, self.name, self.since, 0, why)

    async def run(self) -> None:
        return None


@dataclass
class Shared:
    leadership: Leading
    journal: JournalStore
    controls: ControlStore
    # Vantage views: None alone (a single watcher's view is its own observations).
    views: ViewBoard | None = None
    etcd: Etcd | None = None
    incidents: SharedIncidents | None = None

    async def close(self) -> None:
        if self.etcd is not None:
            await self.etcd.close()


def build(config: Config, journal: Journal, incidents: IncidentStore) -> Shared:
    """Nothing connects here: etcd is dialled by the first call, inside `run()`."""
    cfg = config.cluster
    if cfg is None:
        return Shared(
            Alone(config.watcher.name),
            SqliteJournalStore(journal),
            SqliteControlStore(incidents),
            incidents=SqliteSharedIncidents(incidents),
        )
    return build_cluster(cfg)


def build_cluster(cfg: ClusterConfig) -> Shared:
    """The etcd side: an election, and every shared store fenced by it."""
    etcd = Etcd.from_config(cfg)
    election = Election(etcd, cfg)
    return Shared(
        election,
        EtcdJournalStore(etcd, cfg.namespace, election.fence),
        EtcdControlStore(etcd, cfg.namespace),
        ViewBoard(etcd, cfg.namespace),
        etcd,
        EtcdSharedIncidents(etcd, cfg.namespace, election.fence),
    )
