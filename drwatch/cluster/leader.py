"""Leader election on an etcd lease; the leader stops acting before its lease can expire.

Every watcher holds a lease of `lease_ttl` seconds and keeps it alive every third of it.
A watcher campaigns with one transaction: if the leader key does not exist
(`create_revision == 0`), put it under my lease. The winner's fencing token is that key's
create revision: a journal write compares it in the same etcd transaction, so a leader
that etcd has already replaced cannot write however late it wakes up (`Fence`).

The leader acts only while a keepalive *sent* less than `lease_ttl - safety_margin` ago
was confirmed. etcd counts the lease from when it received that keepalive, which is no
earlier than when it was sent, so the leader stops acting at least `safety_margin`
before etcd can expire its lease and elect someone else, without asking etcd.

Followers keep their own lease alive (they campaign with it and, later, publish their
views under it), read who leads, and watch the leader key to campaign as soon as it goes.
etcd unreachable: nobody acts, and the state says why.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import structlog

from drwatch.cluster.errors import EtcdRefusedError, EtcdUnavailableError, NotLeaderError
from drwatch.cluster.etcd import Compare, Etcd, KeyValue, Put
from drwatch.config import ClusterConfig

log = structlog.get_logger("drwatch.cluster")


class Role(StrEnum):
    STARTING = "starting"  # no answer from etcd yet
    LEADER = "leader"  # leads and may act
    AT_RISK = "at_risk"  # held the lease, but no keepalive confirmed in time: not acting
    FOLLOWER = "follower"  # another watcher leads
    NO_LEADER = "no_leader"  # etcd answers, nobody holds the leader key (between leaders)
    UNAVAILABLE = "unavailable"  # etcd does not answer or refuses: nobody may act


@dataclass(frozen=True, slots=True)
class Fence:
    """A leader's fencing token: etcd's leader key must still have this create revision."""

    key: str
    revision: int

    def holds(self) -> Compare:
        return Compare(self.key, "create", "==", self.revision)


@dataclass(frozen=True, slots=True)
class Leadership:
    """Who leads, as this watcher sees it: what the status page and API show."""

    me: str
    role: Role
    leader: str | None
    since: float | None  # wall clock: when the current leader won
    term: int  # the leader key's create revision; 0 when nobody leads
    reason: str

    @property
    def acting(self) -> bool:
        return self.role is Role.LEADER

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role.value, "acting": self.acting}


@dataclass(frozen=True, slots=True)
class _Won:
    fence: Fence
    lease: int
    since: float


class Election:
    """One watcher's side of the election. `run()` until cancelled; `fence()` before acting."""

    def __init__(
        self,
        etcd: Etcd,
        cfg: ClusterConfig,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._etcd = etcd
        self._cfg = cfg
        self._wall = wall
        self._mono = monotonic
        self.key = f"/{cfg.namespace}/leader"
        self._won: _Won | None = None
        self._confirmed = 0.0  # monotonic send time of the last confirmed keepalive
        self._seen = Leadership(cfg.name, Role.STARTING, None, None, 0, "not connected yet")
        self._stale_lease = 0
        self._lease = 0

    # -- what others read --------------------------------------------------------------------

    @property
    def state(self) -> Leadership:
        won = self._won
        if won is None:
            return self._seen
        age = self._mono() - self._confirmed
        if age < self._cfg.acting_window:
            reason = f"leads; lease confirmed {age:.1f}s ago"
            return Leadership(
                self._cfg.name, Role.LEADER, self._cfg.name, won.since, won.fence.revision, reason
            )
        reason = (
            f"not acting: no keepalive confirmed for {age:.1f}s (limit "
            f"{self._cfg.acting_window:g}s = lease_ttl - safety_margin); {self._seen.reason}"
        )
        return Leadership(
            self._cfg.name, Role.AT_RISK, self._cfg.name, won.since, won.fence.revision, reason
        )

    @property
    def lease(self) -> int:
        """The lease this watcher holds now (0: none): its views are published under it."""
        return self._lease

    def fence(self) -> Fence:
        """The token to write with, or NotLeaderError saying why this watcher may not act."""
        state = self.state
        if self._won is None or not state.acting:
            raise NotLeaderError(f"{state.me} does not lead ({state.role.value}): {state.reason}")
        return self._won.fence

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead or follow, until cancelled; on the way out, give the lease back."""
        try:
            while True:
                try:
                    await self._round()
                except (EtcdUnavailableError, EtcdRefusedError) as exc:
                    # The lease may outlive this round at etcd: give it back when we can.
                    self._stale_lease = self._stale_lease or self._lease
                    self._lease = 0
                    unreachable = isinstance(exc, EtcdUnavailableError)
                    self._lose(
                        Role.UNAVAILABLE, f"etcd unreachable: {exc}" if unreachable else str(exc)
                    )
                    await asyncio.sleep(self._cfg.keepalive_every)
        finally:
            await asyncio.shield(self._resign())

    async def _round(self) -> None:
        """One lease: campaign with it, then lead or follow until it is lost."""
        if self._stale_lease:
            # A lease we gave up on must not keep the leader key: etcd renews every lease
            # when it restarts, so it could outlive our giving up by a whole TTL.
            with suppress(EtcdRefusedError):  # refused: already expired
                await self._etcd.revoke(self._stale_lease)
            self._stale_lease = 0
        sent = self._mono()
        lease = await self._etcd.grant(int(self._cfg.lease_ttl))
        self._confirmed, self._lease = sent, lease
        while True:
            won = await self._campaign(lease)
            if won is not None:
                await self._lead(won)
                break
            await self._follow()
            if not await self._refresh(lease):
                break
        self._lease = 0  # expired at etcd, or lost with the leader key

    async def _campaign(self, lease: int) -> _Won | None:
        since = self._wall()
        value = json.dumps({"name": self._cfg.name, "since": since, "lease": lease})
        free = Compare(self.key, "create", "==", 0)
        if not await self._etcd.txn([free], [Put(self.key, value.encode(), lease)]):
            return None
        kv = await self._etcd.get(self.key)
        if kv is None or kv.lease != lease:
            return None  # won, then lost it already (revoked): campaign again
        won = _Won(Fence(self.key, kv.create_revision), lease, since)
        self._won = won
        log.info("cluster.leader_won", me=self._cfg.name, term=kv.create_revision)
        return won

    async def _refresh(self, lease: int) -> bool:
        """Keep the lease alive once; False when etcd says it has expired."""
        sent = self._mono()
        if await self._etcd.keepalive(lease) <= 0:
            return False
        self._confirmed = sent
        return True

    async def _follow(self) -> None:
        """Note who leads, then wait for the key to change (or one keepalive interval)."""
        kv = await self._etcd.get(self.key)
        if kv is None:
            self._see(Role.NO_LEADER, None, None, 0, "nobody holds the leader key")
            return
        leader = _name(kv)
        self._see(Role.FOLLOWER, leader, _since(kv), kv.create_revision, f"{leader} leads")
        await self._etcd.wait_change(self.key, kv.mod_revision, self._cfg.keepalive_every)

    async def _lead(self, won: _Won) -> None:
        """Keep the lease alive every interval; return when it or the key is lost."""
        why = f"won term {won.fence.revision}"
        self._see(Role.LEADER, self._cfg.name, won.since, won.fence.revision, why)
        while True:
            await asyncio.sleep(self._cfg.keepalive_every)
            sent = self._mono()
            try:
                alive = await self._etcd.keepalive(won.lease)
                kv = await self._etcd.get(self.key)
            except EtcdUnavailableError as exc:
                self._seen = _with_reason(self._seen, f"etcd unreachable: {exc}")
                if self.state.acting:
                    continue  # one missed keepalive; the next may still land in time
                raise
            if alive <= 0 or kv is None or kv.create_revision != won.fence.revision:
                self._lose(Role.NO_LEADER, "lost the leader key (lease expired or deposed)")
                return
            self._confirmed = sent

    # -- transitions ---------------------------------------------------------------------------

    def _see(
        self, role: Role, leader: str | None, since: float | None, term: int, why: str
    ) -> None:
        if role is not self._seen.role or leader != self._seen.leader:
            log.info("cluster.leadership", me=self._cfg.name, role=role.value, leader=leader)
        self._seen = Leadership(self._cfg.name, role, leader, since, term, why)

    def _lose(self, role: Role, why: str) -> None:
        if self._won is not None:
            log.warning("cluster.leader_lost", me=self._cfg.name, reason=why)
            self._stale_lease = self._stale_lease or self._won.lease
        self._won = None
        self._see(role, None, None, 0, why)

    async def _resign(self) -> None:
        """Give the lease back so another watcher leads now, not after the TTL."""
        lease = self._lease or self._stale_lease
        self._won, self._lease, self._stale_lease = None, 0, 0
        # Stopped: no longer leads, whatever it saw last.
        self._see(Role.NO_LEADER, None, None, 0, "stopped: this watcher gave its lease back")
        if lease:
            with suppress(EtcdUnavailableError, EtcdRefusedError):
                await self._etcd.revoke(lease)


def _name(kv: KeyValue) -> str:
    try:
        return str(json.loads(kv.value)["name"])
    except (ValueError, KeyError, TypeError):
        return kv.value.decode(errors="replace")


def _since(kv: KeyValue) -> float | None:
    try:
        return float(json.loads(kv.value)["since"])
    except (ValueError, KeyError, TypeError):
        return None


def _with_reason(seen: Leadership, reason: str) -> Leadership:
    return Leadership(seen.me, seen.role, seen.leader, seen.since, seen.term, reason)
