"""The agent's `postgres` check against real PostgreSQL 15: a primary and a streaming replica.

Every server is started by tests/support/postgres.py from the Debian binaries on
loopback, as the postgres user. Bad input (a server that answers garbage or hangs, a
wrong password, a missing socket, another cluster) must give `unknown` or `critical`
with the reason, and never crash the check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from drwatch.agent import config as agent_config
from drwatch.agent.checks import run_check
from drwatch.agent.postgres import Postgres, PostgresCheck
from drwatch.agent.wire import CheckResult, Status
from tests.support.postgres import PASSWORD, Clusters, Server, clusters, pg_binary, run

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def made() -> Iterator[Clusters]:
    with clusters() as c:
        yield c


@pytest.fixture
def pg(made: Clusters) -> Iterator[Clusters]:
    """The module's cluster maker; every server a test starts is stopped after it."""
    yield made
    made.stop_all()


def pg_config(server: Server, **overrides: Any) -> agent_config.PostgresConfig:
    data = {"host": str(server.sockdir), "port": server.port, "connect_timeout": "5s"}
    return agent_config.PostgresConfig.model_validate({**data, **overrides})


def check_config(**overrides: Any) -> agent_config.PostgresCheckConfig:
    data = {"kind": "postgres", "name": "database", "amcheck_interval": "0s"}
    return agent_config.PostgresCheckConfig.model_validate({**data, **overrides})


@contextlib.asynccontextmanager
async def checking(
    cfg: agent_config.PostgresConfig, password: str | None = None, **check: Any
) -> AsyncIterator[PostgresCheck]:
    async with Postgres(cfg, password=password) as running:
        yield PostgresCheck(check_config(**check), running, timeout=5.0)


async def check_once(server: Server, **check: Any) -> CheckResult:
    async with checking(pg_config(server), **check) as c:
        return await run_check("database", c, 10.0)


async def test_primary_and_replica_report_their_roles(pg: Clusters) -> None:
    """The primary says primary (timeline 1, one replica streaming); the replica says
    replica, streaming from the primary's port, of the same cluster, caught up."""
    primary = pg.primary()
    replica = pg.replica(primary, name="db-2")
    ours = await check_once(primary)
    theirs = await check_once(replica)
    assert ours.status is Status.OK, ours.detail
    assert ours.data["role"] == "primary"
    assert ours.data["timeline"] == 1
    assert ours.data["replicas_streaming"] == 1
    assert ours.data["replica.db-2.state"] == "streaming"
    assert ours.data["system_identifier"] == primary.system_identifier()
    assert theirs.status is Status.OK, theirs.detail
    assert theirs.data["role"] == "replica"
    assert theirs.data["upstream"] == f"127.0.0.1:{primary.port}"
    assert theirs.data["system_identifier"] == ours.data["system_identifier"]
    assert theirs.data["integrity"] == "ok"
    assert theirs.data["data_checksums"] is True


async def test_a_pg_monitor_role_is_enough_for_the_check(pg: Clusters) -> None:
    """The documented least privilege: a login role in pg_monitor gets the whole answer."""
    primary = pg.primary()
    primary.sql("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
    async with checking(pg_config(primary, user="monitor")) as c:
        result = await run_check("database", c, 10.0)
    assert result.status is Status.OK, result.detail
    assert result.data["system_identifier"] == primary.system_identifier()


async def test_a_role_without_pg_monitor_is_unknown_not_a_false_alarm(pg: Clusters) -> None:
    """Without pg_monitor a replica's WAL receiver reads as empty: the check says it
    cannot see, naming the grant, instead of calling the replica not streaming."""
    primary = pg.primary()
    replica = pg.replica(primary)
    primary.sql("CREATE ROLE nobody LOGIN")
    replica.wait_ready()

    async def role_replicated() -> bool:
        return replica.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'nobody'") == "1"

    await until(role_replicated, "the role never reached the replica")
    async with checking(pg_config(replica, user="nobody")) as c:
        result = await run_check("database", c, 10.0)
    assert result.status is Status.UNKNOWN
    assert "GRANT pg_monitor TO nobody" in result.detail
    assert result.data["role"] == "replica"


async def write_rows(server: Server, stop: asyncio.Event, table: str = "load") -> int:
    """Insert rows into `table` until `stop` is set; the number written."""
    conn = await asyncpg.connect(**server.dsn_socket)
    written = 0
    try:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id serial, pad text)")
        while not stop.is_set():
            await conn.execute(f"INSERT INTO {table} (pad) SELECT repeat('x', 500)")
            written += 1
    finally:
        await conn.close()
    return written


async def until(predicate: Any, what: str, deadline_s: float = 30.0) -> Any:
    """Poll the async `predicate` until it returns something truthy, within the deadline."""
    async with asyncio.timeout(deadline_s):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


async def test_replica_lag_grows_under_load_and_clears_after(pg: Clusters) -> None:
    """With replay paused while the primary takes writes, the replica reports lag in
    bytes and seconds and crosses the byte threshold; resumed, it is back to zero."""
    primary = pg.primary()
    replica = pg.replica(primary)
    stop = asyncio.Event()
    replica.sql("SELECT pg_wal_replay_pause()")
    writer = asyncio.create_task(write_rows(primary, stop))
    async with checking(pg_config(replica), critical_lag_bytes=64 * 1024) as c:

        async def lagging() -> CheckResult | None:
            result = await c.run()
            return result if result.status is Status.CRITICAL else None

        lagged = await until(lagging, "the replica never reported lag")
        stop.set()
        assert await writer > 0
        assert int(lagged.data["lag_bytes"]) >= 64 * 1024
        assert float(lagged.data["lag_s"]) > 0
        assert "lag" in lagged.detail
        replica.sql("SELECT pg_wal_replay_resume()")

        async def caught_up() -> CheckResult | None:
            result = await c.run()
            return result if result.data["lag_bytes"] == 0 else None

        done = await until(caught_up, "the replica never caught up")
    assert done.status is Status.OK, done.detail
    assert done.data["lag_s"] == 0.0  # idle primary: no lie from the replay timestamp


async def test_a_corrupted_page_turns_integrity_corrupt(pg: Clusters) -> None:
    """Bytes flipped in a table's data file on disk: reading it fails its checksum, and
    the check says critical, integrity corrupt, with the failure counted once as new."""
    primary = pg.primary()
    primary.sql("CREATE TABLE orders (id int, note text); INSERT INTO orders SELECT 1, 'a'")
    async with checking(pg_config(primary)) as c:
        before = await c.run()
        primary.corrupt_relation("orders")
        with pytest.raises(RuntimeError, match="invalid page"):
            primary.sql("SELECT * FROM orders")
        first = await c.run()
        second = await c.run()
    assert before.data["integrity"] == "ok"
    assert first.status is Status.CRITICAL
    assert first.data["integrity"] == "corrupt"
    assert int(first.data["checksum_failures"]) >= 1
    assert int(first.data["checksum_failures_new"]) >= 1
    assert "checksum failure" in first.detail
    assert second.data["integrity"] == "corrupt"  # it stays corrupt until someone acts
    assert second.data["checksum_failures_new"] == 0


async def test_data_checksums_off_is_a_warning_unless_allowed(pg: Clusters) -> None:
    """A cluster whose checksums were turned off (pg_checksums --disable) cannot see
    page corruption: a warning that says so, unless the config allows it."""
    primary = pg.primary()
    primary.stop("fast")
    run([pg_binary("pg_checksums"), "--disable", "-D", str(primary.data)])
    primary.start()
    warned = await check_once(primary)
    allowed = await check_once(primary, require_data_checksums=False)
    assert warned.status is Status.WARNING
    assert "data checksums are off" in warned.detail
    assert warned.data["data_checksums"] is False
    assert allowed.status is Status.OK, allowed.detail


async def test_amcheck_sweep_finds_a_corrupt_index(pg: Clusters) -> None:
    """Without the extension the sweep says unavailable; with it, healthy indexes are ok
    and an index whose page was damaged on disk makes the check critical."""
    primary = pg.primary()
    primary.sql("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT 1")
    async with checking(pg_config(primary)) as c:
        assert (await c.sweep_now()).result == "unavailable"
        primary.sql("CREATE EXTENSION amcheck")
        healthy = await c.sweep_now()
        assert healthy.result == "ok", healthy.detail
        assert healthy.indexes >= 1
        primary.corrupt_relation("items_pkey")
        found = await c.sweep_now()
        result = await c.run()
    assert found.result == "corrupt", found.detail
    assert "items_pkey" in found.detail
    assert result.status is Status.CRITICAL
    assert result.data["amcheck"] == "corrupt"


async def test_amcheck_sweeps_a_bounded_number_of_indexes_round_and_round(pg: Clusters) -> None:
    """A sweep checks at most amcheck_max_indexes; the next one goes on from there, and
    the one after the last index starts again from the first."""
    primary = pg.primary()
    primary.sql("CREATE EXTENSION amcheck; CREATE TABLE a (id int PRIMARY KEY)")
    oids = primary.sql(
        "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid "
        "ORDER BY c.oid"
    ).split()
    per_sweep = len(oids) // 2 + 1
    async with checking(pg_config(primary), amcheck_max_indexes=per_sweep) as c:
        sweeps = [await c.sweep_now() for _ in range(3)]
    assert [s.result for s in sweeps] == ["ok", "ok", "ok"]
    assert [s.indexes for s in sweeps] == [per_sweep, len(oids) - per_sweep, per_sweep]
    assert [s.next_oid for s in sweeps] == [int(oids[per_sweep - 1]), 0, int(oids[per_sweep - 1])]


async def test_a_replica_of_another_cluster_is_critical(pg: Clusters) -> None:
    """A replica restored from a different cluster: its system identifier is not the one
    expected; pointed at our primary it cannot stream either. Both say why."""
    ours = pg.primary()
    other = pg.primary(fresh=True)
    stranger = pg.replica(other)
    assert stranger.system_identifier() != ours.system_identifier()
    expected = ours.system_identifier()
    result = await check_once(stranger, expect_system_identifier=expected)
    assert result.status is Status.CRITICAL
    assert "another cluster" in result.detail
    assert expected in result.detail
    stranger.sql(f"ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={ours.port}'")
    stranger.sql("SELECT pg_reload_conf()")
    other.stop("fast")

    async def not_streaming() -> CheckResult | None:
        result = await check_once(stranger)
        return result if result.data.get("receiver") != "streaming" else None

    stuck = await until(not_streaming, "the stranger kept streaming")
    assert stuck.status is Status.CRITICAL
    assert "not streaming" in stuck.detail


# --- bad input: nothing crashes, the reason is clear ---------------------------------------


@contextlib.asynccontextmanager
async def fake_server(answer: bytes | None, *, close: bool = True) -> AsyncIterator[int]:
    """A TCP server on loopback that reads the client's first bytes, sends `answer` and
    closes (or, `close=False`, holds the connection open); `None`: it never answers."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        if answer is None:
            return
        await reader.read(8)
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def check_address(port: int, connect_timeout: str = "1s") -> CheckResult:
    cfg = agent_config.PostgresConfig(host="127.0.0.1", port=port, connect_timeout=connect_timeout)  # type: ignore[arg-type]
    async with checking(cfg, password="x") as c:
        return await run_check("database", c, 5.0)


@pytest.mark.parametrize(
    ("answer", "close", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(range(256)), True, "closed the connection"),
        (b"R\x00\x00\x00\x08garbage" + bytes(range(256)), False, "not a PostgreSQL answer"),
    ],
    ids=["garbage-then-close", "garbage-held-open"],
)
async def test_a_server_that_answers_garbage_is_unknown(
    answer: bytes, close: bool, reason: str
) -> None:
    """Bytes that are not the PostgreSQL protocol: unknown, and the reason says so."""
    async with fake_server(answer, close=close) as port:
        result = await check_address(port)
    assert result.status is Status.UNKNOWN
    assert result.detail.startswith(f"database unreachable: 127.0.0.1:{port}: ")
    assert reason in result.detail


async def test_a_server_that_hangs_is_unknown_within_the_deadline() -> None:
    """A server that accepts and never answers: unknown, no answer in time; the check's
    own deadline fires before the agent's, so the reason is the database's."""
    async with fake_server(None) as port:
        result = await check_address(port, connect_timeout="300ms")
    assert result.status is Status.UNKNOWN
    assert "no answer in time" in result.detail


async def test_a_wrong_password_is_unknown_with_the_reason(pg: Clusters) -> None:
    """TCP needs the password: a wrong one is unknown and says authentication failed;
    the right one works, so it was the password."""
    primary = pg.primary()
    tcp = pg_config(primary, host="127.0.0.1")
    async with checking(tcp, password="wrong") as c:
        refused = await run_check("database", c, 10.0)
    async with checking(tcp, password=PASSWORD) as c:
        accepted = await run_check("database", c, 10.0)
    assert refused.status is Status.UNKNOWN
    assert "authentication failed" in refused.detail
    assert accepted.status is Status.OK, accepted.detail


async def test_a_missing_socket_is_unknown(tmp_path: Path) -> None:
    """No server behind the socket directory: unknown, no such socket, nothing raised."""
    cfg = agent_config.PostgresConfig(host=str(tmp_path), port=5999)
    async with checking(cfg) as c:
        result = await run_check("database", c, 5.0)
    assert result.status is Status.UNKNOWN
    assert f"{tmp_path}/.s.PGSQL.5999: no such socket" in result.detail


async def test_the_check_recovers_when_the_server_comes_back(pg: Clusters) -> None:
    """The kept session dies with the server; the next call after a restart reconnects."""
    primary = pg.primary()
    async with checking(pg_config(primary)) as c:
        assert (await c.run()).status is Status.OK
        primary.stop("fast")
        down = await c.run()
        primary.start()
        back = await c.run()
    assert down.status is Status.UNKNOWN
    assert back.status is Status.OK, back.detail
