"""Leader election on a real etcd: one leads, a killed or paused leader is replaced, a
deposed one cannot journal, and without etcd nobody acts.

Timings (tests/support/etcd.py `member_config`): lease 3 s, keepalive 1 s, request
timeout 0.5 s, safety margin 0.5 s, so a leader acts for at most 2.5 s past its last
confirmed keepalive. Deadlines below are generous multiples of these; nothing is timed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drwatch.cluster.errors import NotLeaderError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import EtcdJournalStore
from drwatch.cluster.leader import Election, Role
from tests.support.etcd import (
    Blackhole,
    EtcdServer,
    etcd_cluster,
    etcd_server,
    member,
    member_config,
    until,
)

pytestmark = pytest.mark.services

TAKEOVER_DEADLINE = 15.0  # lease TTL (3 s) plus ample room on a loaded 2-core machine


@pytest.fixture
def etcd_srv(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path) as srv:
        yield srv


@asynccontextmanager
async def running(
    srv: EtcdServer, name: str, skew: list[float] | None = None
) -> AsyncIterator[Election]:
    """An in-process watcher's election, cancelled (and its lease revoked) on exit.
    `skew[0]` is added to its monotonic clock, to stand for a watcher that stalled."""
    cfg = member_config(srv.endpoint, name)
    etcd = Etcd(cfg.endpoints, timeout=cfg.request_timeout)
    offset = skew if skew is not None else [0.0]
    election = Election(etcd, cfg, monotonic=lambda: time.monotonic() + offset[0])
    task = asyncio.create_task(election.run())
    try:
        yield election
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await etcd.close()


async def test_one_watcher_leads_and_every_watcher_says_who(etcd_srv: EtcdServer) -> None:
    """Two watchers: exactly one acts; the other follows and reports the same leader,
    since and term; the follower's fence is refused with the reason."""
    async with running(etcd_srv, "w1") as w1, running(etcd_srv, "w2") as w2:
        await until(lambda: w1.state.acting or w2.state.acting, TAKEOVER_DEADLINE)
        leader, follower = (w1, w2) if w1.state.acting else (w2, w1)
        await until(lambda: follower.state.role is Role.FOLLOWER, TAKEOVER_DEADLINE)
        lead, seen = leader.state, follower.state
        assert not seen.acting
        assert (seen.leader, seen.since, seen.term) == (lead.me, lead.since, lead.term)
        assert lead.since is not None
        assert lead.term > 0
        with pytest.raises(NotLeaderError, match=f"{lead.me} leads"):
            follower.fence()
        assert leader.fence().revision == lead.term


async def test_a_leader_stops_acting_before_etcd_expires_its_lease(etcd_srv: EtcdServer) -> None:
    """When no keepalive was confirmed for lease_ttl - safety_margin (here: its clock
    jumps as after a stall), the leader refuses to act while etcd still has its key."""
    skew = [0.0]
    async with running(etcd_srv, "w1", skew) as w1:
        await until(lambda: w1.state.acting, TAKEOVER_DEADLINE)
        term = w1.state.term
        skew[0] = member_config(etcd_srv.endpoint, "w1").acting_window
        state = w1.state
        assert state.role is Role.AT_RISK
        assert "no keepalive confirmed" in state.reason
        with pytest.raises(NotLeaderError, match="at_risk"):
            w1.fence()
        etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
        kv = await etcd.get(w1.key)
        await etcd.close()
        assert kv is not None
        assert kv.create_revision == term


async def test_kill_9_of_the_leader_process_lets_another_lead(etcd_srv: EtcdServer) -> None:
    """A leader in its own process is killed with -9: its lease runs out and the
    in-process watcher takes over with a new term; it said who led before."""
    with member(etcd_srv.endpoint, "m1") as m1:
        old_term = int(m1.line(TAKEOVER_DEADLINE).split()[1])
        async with running(etcd_srv, "w2") as w2:
            await until(lambda: w2.state.role is Role.FOLLOWER, TAKEOVER_DEADLINE)
            assert (w2.state.leader, w2.state.term) == ("m1", old_term)
            killed_at = time.time()
            m1.proc.send_signal(signal.SIGKILL)
            await until(lambda: w2.state.acting, TAKEOVER_DEADLINE)
            state = w2.state
            assert state.leader == "w2"
            assert state.term > old_term
            assert state.since is not None
            assert state.since >= killed_at


async def test_a_deposed_leader_that_wakes_late_cannot_journal(etcd_srv: EtcdServer) -> None:
    """A leader checks its fence and is then paused (SIGSTOP). Another watcher wins; the
    old one, continued, tries to journal an effect with the fence it holds: etcd refuses
    it, and only the new leader's intent is in the journal."""
    with member(etcd_srv.endpoint, "m1") as m1:
        old_term = int(m1.line(TAKEOVER_DEADLINE).split()[1])
        m1.proc.send_signal(signal.SIGSTOP)
        async with running(etcd_srv, "w2") as w2:
            await until(lambda: w2.state.acting, TAKEOVER_DEADLINE)
            assert w2.state.term > old_term
            journal = EtcdJournalStore(w2._etcd, "drwatch-test", w2.fence)
            m1.proc.send_signal(signal.SIGCONT)
            m1.send("write from-m1")
            answer = m1.line(TAKEOVER_DEADLINE)
            assert answer.startswith("refused"), answer
            assert f"no longer revision {old_term}" in answer
            await journal.effect_intent("run-1", "step", "from-w2", params={}, owner="w2", now=1)
            assert await journal.effect("run-1", "step", "from-m1") is None
            row = await journal.effect("run-1", "step", "from-w2")
            assert row is not None
            assert row.owner == "w2"


async def test_the_leader_journals_under_its_fence(etcd_srv: EtcdServer) -> None:
    """The control case of the test above: a leader that was not deposed writes."""
    with member(etcd_srv.endpoint, "m1") as m1:
        m1.line(TAKEOVER_DEADLINE)
        m1.send("write k1")
        assert m1.line(TAKEOVER_DEADLINE) == "written"


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_without_etcd_nobody_acts_and_the_state_says_why(
    etcd_srv: EtcdServer, outage: str
) -> None:
    """etcd killed (connections refused) or paused (calls time out): the leader stops
    acting, every watcher reports etcd unreachable; once etcd is back, one leads again."""
    async with running(etcd_srv, "w1") as w1, running(etcd_srv, "w2") as w2:
        await until(lambda: w1.state.acting or w2.state.acting, TAKEOVER_DEADLINE)
        if outage == "killed":
            etcd_srv.kill()
        else:
            etcd_srv.pause()
        await until(lambda: not w1.state.acting and not w2.state.acting, TAKEOVER_DEADLINE)
        await until(
            lambda: w1.state.role is Role.UNAVAILABLE and w2.state.role is Role.UNAVAILABLE,
            TAKEOVER_DEADLINE,
        )
        for w in (w1, w2):
            assert w.state.reason.startswith("etcd unreachable"), w.state.reason
            assert w.state.leader is None
            with pytest.raises(NotLeaderError, match="unavailable"):
                w.fence()
        if outage == "killed":
            etcd_srv.start()
        else:
            etcd_srv.resume()
        await until(lambda: w1.state.acting != w2.state.acting, TAKEOVER_DEADLINE)


async def test_a_leader_cut_from_etcd_stops_before_another_starts(etcd_srv: EtcdServer) -> None:
    """w1 reaches etcd through a proxy that turns into a black hole (a partition: calls
    time out); w2 reaches etcd directly. w1 stops acting on its own clock, w2 leads once
    the lease has expired, and at no sample (every 10 ms) did both act at once."""
    proxy = Blackhole(etcd_srv.client_port)
    await proxy.start()
    via_proxy = EtcdServer(etcd_srv.binary, etcd_srv.data_dir, proxy.port, etcd_srv.peer_port)
    try:
        async with running(via_proxy, "w1") as w1:
            await until(lambda: w1.state.acting, TAKEOVER_DEADLINE)
            async with running(etcd_srv, "w2") as w2:
                await until(lambda: w2.state.role is Role.FOLLOWER, TAKEOVER_DEADLINE)
                proxy.cut()
                both_acted = False
                async with asyncio.timeout(TAKEOVER_DEADLINE):
                    while not w2.state.acting:
                        both_acted |= w1.state.acting and w2.state.acting
                        await asyncio.sleep(0.01)
                assert not both_acted
                assert not w1.state.acting
                assert w1.state.role in {Role.AT_RISK, Role.UNAVAILABLE}
                assert w2.state.leader == "w2"
                proxy.heal()
                await until(lambda: w1.state.role is Role.FOLLOWER, TAKEOVER_DEADLINE)
                assert w1.state.leader == "w2"
    finally:
        await proxy.close()


async def test_losing_an_etcd_minority_keeps_a_leader(tmp_path: Path) -> None:
    """Three etcd members; the watchers list all three, each starting at a different one.
    The member the leader talks to is killed: the watchers move to the others, one of
    them still leads, and nobody reports etcd unreachable."""
    with etcd_cluster(tmp_path) as members:
        endpoints = [m.endpoint for m in members]

        @asynccontextmanager
        async def watcher(name: str, first: int) -> AsyncIterator[Election]:
            order = endpoints[first:] + endpoints[:first]
            cfg = member_config(order[0], name).model_copy(update={"endpoints": order})
            etcd = Etcd(cfg.endpoints, timeout=cfg.request_timeout)
            election = Election(etcd, cfg)
            task = asyncio.create_task(election.run())
            try:
                yield election
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await etcd.close()

        async with watcher("w1", 0) as w1, watcher("w2", 1) as w2:
            await until(lambda: w1.state.acting or w2.state.acting, TAKEOVER_DEADLINE)
            leader = w1 if w1.state.acting else w2
            used = leader._etcd.endpoint
            next(m for m in members if m.endpoint == used).kill()

            def settled() -> bool:
                roles = sorted(w.state.role.value for w in (w1, w2))
                return roles == ["follower", "leader"]

            # Past one acting window, so a leader that could not keep its lease has lost it.
            await asyncio.sleep(member_config(used, "w").acting_window + 1.0)
            await until(settled, TAKEOVER_DEADLINE)
            assert w1.state.acting != w2.state.acting
            for w in (w1, w2):
                assert w._etcd.endpoint != used
