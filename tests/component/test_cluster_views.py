"""Vantage views on a real etcd: each watcher publishes under its own lease, every
watcher reads them all, and a watcher that goes away takes its view with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.cluster.errors import NoLeaseError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import ViewBoard
from drwatch.cluster.leader import Election
from drwatch.cluster.vantage import Basis, Seen, View, judge_target
from tests.support.etcd import EtcdServer, etcd_server, member_config, until

pytestmark = pytest.mark.services


@pytest.fixture
def etcd_srv(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path) as srv:
        yield srv


async def test_views_live_under_each_watchers_lease(etcd_srv: EtcdServer) -> None:
    """w1 and w2 publish; both views are read back and corroborate a silence; when w2
    stops (its lease revoked), its view is gone and one view no longer makes a quorum."""
    etcd = Etcd([etcd_srv.endpoint], timeout=2.0)
    board = ViewBoard(etcd, "drwatch-test")
    w1 = Election(etcd, member_config(etcd_srv.endpoint, "w1"))
    w2 = Election(etcd, member_config(etcd_srv.endpoint, "w2"))
    t1, t2 = asyncio.create_task(w1.run()), asyncio.create_task(w2.run())
    try:
        await until(lambda: bool(w1.lease and w2.lease), 15.0)
        now = time.time()
        await board.publish(View("w1", now, {"i-1": Seen.SILENT}), w1.lease)
        await board.publish(View("w2", now, {"i-1": Seen.SILENT}), w2.lease)
        seen = await board.views()
        assert sorted(v.watcher for v in seen) == ["w1", "w2"]
        verdict = judge_target("i-1", seen, now=now, max_age=10.0, quorum=2)
        assert (verdict.down, verdict.basis) == (True, Basis.QUORUM)

        t2.cancel()
        await asyncio.gather(t2, return_exceptions=True)
        seen = await board.views()
        assert [v.watcher for v in seen] == ["w1"]
        verdict = judge_target("i-1", seen, now=now, max_age=10.0, quorum=2)
        assert (verdict.down, verdict.basis) == (False, Basis.TOO_FEW)
        with pytest.raises(NoLeaseError):
            await board.publish(View("w2", now, {}), w2.lease)
    finally:
        for t in (t1, t2):
            t.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)
        await etcd.close()
