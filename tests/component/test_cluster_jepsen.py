"""Jepsen-style: three watcher processes journal effects whenever they lead, while a
seeded nemesis kills them (-9), pauses them (SIGSTOP, sometimes past the lease), pauses
etcd and kills and restarts it. Afterwards, read in etcd's own order, the journal must
show that no write of a leader landed once a newer leader had won.

Each writer checks its fence, waits up to 200 ms (a window the pauses fall into, as a
GC pause would), then writes with the fence it checked: a writer paused past its lease
wakes up holding a stale fence, and etcd must refuse it.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from drwatch.cluster.errors import EtcdUnavailableError
from drwatch.cluster.etcd import Etcd
from tests.support.etcd import EtcdServer, Member, etcd_server, member

pytestmark = pytest.mark.services

SEED = 1207
ROUNDS = 12
NAMES = ("w1", "w2", "w3")


@pytest.fixture
def etcd_srv(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path) as srv:
        yield srv


class Nemesis:
    """Faults, chosen by a seeded random: each one heals before the next begins."""

    def __init__(self, srv: EtcdServer, stack: ExitStack, rng: random.Random) -> None:
        self.srv, self.stack, self.rng = srv, stack, rng
        self.members: dict[str, Member] = {}
        self.log: list[str] = []

    def start(self, name: str) -> None:
        self.members[name] = self.stack.enter_context(member(self.srv.endpoint, name, writer=True))

    async def kill_member(self) -> None:
        """kill -9 of the leader, or of another watcher; started again a while later."""
        name = self.rng.choice([await self.leader() or NAMES[0], *NAMES])
        self.members[name].stop()
        await asyncio.sleep(self.rng.uniform(0.5, 4.0))
        self.start(name)

    async def pause_leader(self) -> None:
        """SIGSTOP the leader for 0.5-6 s: past its 3 s lease about half the time."""
        name = await self.leader() or self.rng.choice(NAMES)
        proc = self.members[name].proc
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(self.rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGCONT)

    async def leader(self) -> str | None:
        etcd = Etcd([self.srv.endpoint], timeout=2.0)
        try:
            kv = await etcd.get("/drwatch-test/leader")
        except EtcdUnavailableError:
            return None
        finally:
            await etcd.close()
        return str(json.loads(kv.value)["name"]) if kv is not None else None

    async def pause_etcd(self) -> None:
        self.srv.pause()
        await asyncio.sleep(self.rng.uniform(0.5, 4.0))
        self.srv.resume()

    async def restart_etcd(self) -> None:
        self.srv.kill()
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        await asyncio.to_thread(self.srv.start)

    async def run(self, rounds: int) -> None:
        faults: list[Callable[[], Awaitable[None]]] = [
            self.kill_member,
            self.pause_leader,
            self.pause_leader,
            self.pause_etcd,
            self.restart_etcd,
        ]
        for _ in range(rounds):
            fault = self.rng.choice(faults)
            self.log.append(fault.__name__)
            await fault()
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))


# Twelve faults of up to 9 s each, with their pauses: about a minute, more when loaded.
@pytest.mark.timeout(300)
async def test_no_write_of_a_deposed_leader_lands_after_a_newer_leader_won(
    etcd_srv: EtcdServer,
) -> None:
    with ExitStack() as stack:
        nemesis = Nemesis(etcd_srv, stack, random.Random(SEED))
        for name in NAMES:
            nemesis.start(name)
        await nemesis.run(ROUNDS)
        await asyncio.sleep(4.0)  # the last fault healed: someone leads and writes again

    etcd = Etcd([etcd_srv.endpoint], timeout=5.0)
    writes = await etcd.get_prefix("/drwatch-test/journal/effects/jepsen/")
    await etcd.close()
    # (etcd's revision of the write, the term the writer claimed), in etcd's order.
    history = sorted((kv.mod_revision, int(kv.key.split("/")[-2].split("-")[1])) for kv in writes)
    terms = [term for _, term in history]
    assert len(set(terms)) >= 3, f"too few leaders to prove anything: {nemesis.log}"
    for (rev, term), (_, prev_term) in zip(history[1:], history, strict=False):
        assert term >= prev_term, f"term {term} wrote at revision {rev} after term {prev_term}"
    assert all(rev > term for rev, term in history), "a write landed before its term began"
