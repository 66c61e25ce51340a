"""The sandbox with real PostgreSQL (`Options.postgres`), without the daemon.

One sandbox serves the module: db-1 a real primary, db-2 and db-3 streaming replicas,
the writer inserting through the app servers' database address. Each test injects a
fault through the sandbox's own chaos API and checks what the real servers do and what
the hosts' agents report about them (the signed facts the daemon reads), then heals.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from drwatch.agent import wire
from drwatch.sandbox import control
from drwatch.sandbox.faults import Fault
from drwatch.sandbox.pgcluster import PG_BIN, PgCluster
from drwatch.sandbox.pgworld import RealDatabases
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, Sandbox
from tests.support.services import need_binary

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]


class PgWorld:
    def __init__(self, sb: Sandbox, session: aiohttp.ClientSession) -> None:
        self.sb = sb
        self.chaos = control.attach(sb) if sb.control is None else None
        self.session = session
        assert isinstance(sb.databases, RealDatabases)
        self.dbs: RealDatabases = sb.databases

    def cluster(self, volume: str) -> PgCluster:
        return self.dbs.clusters[self.sb.seeded.volumes[volume]]

    async def sql(self, volume: str, query: str) -> str:
        return await asyncio.to_thread(self.cluster(volume).sql, query)

    async def check(self, name: str) -> dict[str, Any] | None:
        """The `database` check in the host's signed agent facts (None: silent)."""
        host = self.sb.host_named(name)
        assert host is not None
        path = wire.FACTS_PATH
        key = wire.derive_host_secret(self.sb.secret, host.instance_id)
        headers = wire.signed_headers(
            key, "GET", path, b"", now=time.time(), target=host.instance_id
        )
        try:
            async with self.session.get(
                f"http://{host.agent_addr}{path}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as r:
                facts = wire.facts_to_dict(wire.decode_facts(await r.read()))
        except (aiohttp.ClientError, TimeoutError):
            return None
        check: dict[str, Any] = facts["checks"]["database"]
        return check


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 30.0) -> None:
    async with asyncio.timeout(deadline):
        while True:
            if await check():
                return
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PgWorld]:
    need_binary("moto_server", str(Path(sys.executable).parent))
    need_binary("postgres", str(PG_BIN))
    options = Options(boot_delay_s=1.0, with_watcher=False, postgres=True)
    sb = Sandbox(default_topology(), tmp_path_factory.mktemp("pgsb"), options)
    chaos = control.attach(sb)
    async with sb, aiohttp.ClientSession() as session:
        w = PgWorld(sb, session)
        w.chaos = chaos
        yield w


async def _do(w: PgWorld, verb: str, target: str, **params: float) -> str:
    assert w.chaos is not None
    return await w.chaos.do(Fault(verb, target, dict(params)))


async def test_the_primary_and_two_streaming_replicas_report_their_real_roles(
    world: PgWorld,
) -> None:
    """db-1 is a primary, db-2 and db-3 replicas of the same cluster, each with data
    checksums on; the agents report the roles and integrity the servers give."""
    assert await world.sql("db-1-data", "SELECT pg_is_in_recovery()") == "f"
    sysid = await world.sql("db-1-data", "SELECT system_identifier FROM pg_control_system()")
    for vol in ("db-2-data", "db-3-data"):
        assert await world.sql(vol, "SELECT pg_is_in_recovery()") == "t"
        assert await world.sql(vol, "SHOW data_checksums") == "on"
    for name, role in (("db-1", "primary"), ("db-2", "replica"), ("db-3", "replica")):
        check = await world.check(name)
        assert check is not None
        assert check["data"]["role"] == role, check
        assert check["data"]["integrity"] == "ok"
        assert check["data"]["system_identifier"] == sysid
        assert check["data"]["source"] == "postgres"


async def test_the_writer_writes_through_the_app_servers_address_and_rows_stream(
    world: PgWorld,
) -> None:
    """Rows arrive on db-1 every 100 ms and reach both replicas."""
    writer = world.dbs.writer
    assert writer is not None
    assert writer.target_port == world.cluster("db-1-data").port
    before = len(writer.tally.acked)
    await asyncio.sleep(1.5)
    assert len(writer.tally.acked) >= before + 5
    newest = max(writer.tally.acked)

    async def streamed() -> bool:
        counts = [await world.sql(v, f"SELECT count(*) FROM drwatch_writes WHERE seq = {newest}")
                  for v in ("db-1-data", "db-2-data", "db-3-data")]  # fmt: skip
        return counts == ["1", "1", "1"]

    await eventually(streamed, 10)


async def test_seeded_snapshots_are_copies_taken_while_rows_were_written(world: PgWorld) -> None:
    """Each seeded snapshot is its own data directory; the newer holds more rows."""
    counts = []
    for n in (1, 2, 3):
        sid = world.sb.seeded.snapshots[f"db-1-data-snap-{n}"]
        copy = PgCluster(world.dbs.snapshots[sid], 0)
        assert (copy.data_dir / "PG_VERSION").is_file()
        counts.append(len(list((copy.data_dir / "base").iterdir())))
    assert all(c > 0 for c in counts)


async def test_lag_replica_holds_replay_back_and_heal_catches_up(world: PgWorld) -> None:
    """lag-replica delays db-2's replay: its agent reports bytes received but not yet
    replayed; heal lets it catch up."""
    await _do(world, "lag-replica", "db-2", delay=30.0)

    async def lagging() -> bool:
        check = await world.check("db-2")
        return check is not None and check["data"]["lag_bytes"] > 0

    await eventually(lagging, 15)
    await _do(world, "heal", "db-2")

    async def caught_up() -> bool:
        check = await world.check("db-2")
        return check is not None and check["data"]["lag_bytes"] == 0

    await eventually(caught_up, 15)


async def test_stop_instance_crashes_the_real_server_and_heal_restarts_it(world: PgWorld) -> None:
    """Stopping db-3 stops its PostgreSQL; healing boots it and the server starts again on
    the same data, still a replica."""
    cluster = world.cluster("db-3-data")
    await _do(world, "stop-instance", "db-3")
    assert not cluster.running()
    await _do(world, "heal", "db-3")

    async def back() -> bool:
        check = await world.check("db-3")
        return check is not None and check["data"].get("role") == "replica"

    await eventually(back, 30)
    assert cluster.running()


async def test_a_zone_outage_stops_the_servers_in_it_until_healed(world: PgWorld) -> None:
    """us-east-1b out: db-2's server is down (a crash), db-1's still runs; healed, db-2's
    server starts again and streams from db-1."""
    await _do(world, "zone-outage", "us-east-1b")
    assert not world.cluster("db-2-data").running()
    assert world.cluster("db-1-data").running()
    await _do(world, "heal", "us-east-1b")

    async def streaming() -> bool:
        check = await world.check("db-2")
        return check is not None and check["data"].get("role") == "replica"

    await eventually(streaming, 30)
    assert world.cluster("db-2-data").running()


async def test_corrupt_volume_breaks_a_real_page_that_a_restart_reveals(world: PgWorld) -> None:
    """corrupt-volume flips bytes of a data page on db-3's volume; after the server reads
    it from disk again (a stop and start of the host), its agent reports the data corrupt
    from a real checksum failure; heal flips the bytes back."""
    await _do(world, "corrupt-volume", "db-3-data")
    await _do(world, "stop-instance", "db-3")
    await _do(world, "heal", "db-3")

    async def corrupt() -> bool:
        check = await world.check("db-3")
        return check is not None and check["data"].get("integrity") == "corrupt"

    await eventually(corrupt, 30)
    check = await world.check("db-3")
    assert check is not None
    assert check["status"] == "critical"
    assert "checksum" in check["detail"] or "invalid page" in check["detail"]
    await _do(world, "heal", "db-3-data")


async def test_a_new_snapshot_and_a_volume_from_it_get_real_data(world: PgWorld) -> None:
    """A snapshot made at the provider is copied from the running server by the reconcile
    that sees it; a volume made from it starts as a copy of that copy, with its rows."""
    ec2 = world.sb.moto.ec2("us-east-1")
    vid = world.sb.seeded.volumes["db-1-data"]
    asked_at = time.time()
    sid = (await asyncio.to_thread(ec2.create_snapshot, VolumeId=vid))["SnapshotId"]
    await world.sb.poll()  # the reconcile that sees the snapshot copies the volume
    copied_by = time.time()
    assert sid in world.dbs.snapshots
    vol = await asyncio.to_thread(
        ec2.create_volume, SnapshotId=sid, AvailabilityZone="us-east-1b", Size=10
    )
    await world.sb.poll()
    copy = world.dbs.clusters[vol["VolumeId"]]
    await asyncio.to_thread(world.dbs.run_volume, vol["VolumeId"])
    try:
        newest = float(await asyncio.to_thread(copy.sql, "SELECT max(at) FROM drwatch_writes"))
        # The writer's newest row in the copy is from between the call and the copy.
        assert asked_at - 0.5 < newest <= copied_by
        assert await asyncio.to_thread(copy.in_recovery) is False
    finally:
        await asyncio.to_thread(copy.stop, "immediate")
