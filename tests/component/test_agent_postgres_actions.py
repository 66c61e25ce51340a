"""The agent's built-in database actions against real PostgreSQL 15: promote, follow,
freeze and thaw. Idempotent, parameters validated, the freeze bounded by `max_freeze`
even when the caller dies, and no write lost across a freeze."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from drwatch.agent import config as agent_config
from drwatch.agent.actions import Action, ActionError
from drwatch.agent.pgactions import Freezer, database_actions, format_conninfo, parse_conninfo
from drwatch.agent.postgres import Postgres, PostgresCheck
from drwatch.agent.wire import signed_headers
from tests.component.test_agent_postgres import check_config, fake_server, pg_config, until
from tests.support.postgres import PASSWORD, Clusters, Server, clusters, loop_filesystem
from tests.support.services import free_port, need_binary

pytestmark = pytest.mark.services
ALL = ["promote", "follow", "freeze", "thaw"]


@pytest.fixture(scope="module")
def made() -> Iterator[Clusters]:
    with clusters() as c:
        yield c


@pytest.fixture
def pg(made: Clusters) -> Iterator[Clusters]:
    yield made
    made.stop_all()


@contextlib.asynccontextmanager
async def agent_of(server: Server, **overrides: Any) -> AsyncIterator[dict[str, Action]]:
    """The built-in actions of an agent on `server`, with every one enabled."""
    cfg = pg_config(server, actions=ALL, **overrides)
    async with Postgres(cfg, password=PASSWORD) as running:
        yield database_actions(running)


async def refused(action: Action, params: dict[str, str]) -> ActionError:
    with pytest.raises(ActionError) as caught:
        await action(params)
    return caught.value


async def test_promote_twice(pg: Clusters) -> None:
    """The first promote turns the replica into a primary on a new timeline; the second
    finds it done and says so with `previous_role`. Parameters are refused."""
    primary = pg.primary()
    replica = pg.replica(primary)
    primary.stop("fast")  # fenced, as the playbook does before promoting
    async with agent_of(replica) as actions:
        first = await actions["promote"]({})
        second = await actions["promote"]({})
        bad = await refused(actions["promote"], {"force": "yes"})
    assert first == {"role": "primary", "timeline": 2, "previous_role": "replica", "promoted": True}
    assert second == {
        "role": "primary",
        "timeline": 2,
        "previous_role": "primary",
        "promoted": False,
    }
    assert replica.sql("SELECT pg_is_in_recovery()") == "f"
    assert bad.status == 400


async def test_follow_the_new_primary_after_a_promotion(pg: Clusters) -> None:
    """db-3 follows db-2 once db-2 is promoted: it streams from it, and rows written on the
    new primary arrive. Asked again, nothing changes. The old primary is not a target."""
    old = pg.primary()
    new = pg.replica(old, name="db-2")
    other = pg.replica(old, name="db-3")
    old.stop("fast")
    async with agent_of(new) as on_new:
        await on_new["promote"]({})
    target = {"host": "127.0.0.1", "port": str(new.port)}
    async with agent_of(other) as actions:
        first = await actions["follow"](target)
        again = await actions["follow"](target)
    assert first["changed"] is True
    assert first["upstream"] == f"127.0.0.1:{new.port}"
    assert first["previous_upstream"] == f"127.0.0.1:{old.port}"
    assert first["timeline"] == 2
    assert again["changed"] is False
    new.sql("CREATE TABLE after_failover (id int); INSERT INTO after_failover SELECT 42")

    async def replicated() -> bool:
        try:
            return other.sql("SELECT id FROM after_failover") == "42"
        except RuntimeError:
            return False

    assert await until(replicated, "the row never reached the follower")
    kept = parse_conninfo(other.sql("SHOW primary_conninfo"))  # the rest was kept
    assert kept["user"] == "postgres"
    assert kept["passfile"] == "/var/lib/postgresql/.pgpass"


async def test_follow_refuses_what_it_must_not_follow(pg: Clusters) -> None:
    """A primary cannot follow; a replica is not a new primary; another cluster is refused
    before anything changes; bad host and port never reach the config."""
    primary = pg.primary()
    replica = pg.replica(primary)
    sibling = pg.replica(primary)
    stranger = pg.primary(fresh=True)
    async with agent_of(primary) as on_primary:
        as_primary = await refused(on_primary["follow"], {"host": "127.0.0.1", "port": "5"})
    async with agent_of(replica) as actions:
        follow = actions["follow"]
        to_replica = await refused(follow, {"host": "127.0.0.1", "port": str(sibling.port)})
        to_stranger = await refused(follow, {"host": "127.0.0.1", "port": str(stranger.port)})
        bad_host = await refused(follow, {"host": "x' host=evil", "port": "5432"})
        bad_port = await refused(follow, {"host": "127.0.0.1", "port": "99999"})
        missing = await refused(follow, {"host": "127.0.0.1"})
    assert as_primary.status == 409
    assert "is a primary" in str(as_primary)
    assert to_replica.status == 409
    assert "not a primary" in str(to_replica)
    assert to_stranger.status == 409
    assert "another cluster" in str(to_stranger)
    assert f"port={primary.port}" in replica.sql("SHOW primary_conninfo")
    assert {bad_host.status, bad_port.status, missing.status} == {400}


async def test_actions_on_a_hanging_database_fail_with_the_reason() -> None:
    """A server that accepts and never answers: every action is a 503 saying so, in time."""
    async with fake_server(None) as port:
        cfg = agent_config.PostgresConfig.model_validate(
            {"host": "127.0.0.1", "port": port, "connect_timeout": "300ms", "actions": ALL}
        )
        async with Postgres(cfg, password="x") as running:
            actions = database_actions(running)
            errors = [
                await refused(actions["promote"], {}),
                await refused(actions["follow"], {"host": "127.0.0.1", "port": "5432"}),
                await refused(actions["freeze"], {}),
            ]
            thaw = await actions["thaw"]({})
    assert [e.status for e in errors] == [503, 503, 503]
    assert all("no answer in time" in str(e) for e in errors)
    assert thaw["was_frozen"] is False


def test_conninfo_round_trips_quotes_and_backslashes() -> None:
    """primary_conninfo is parsed and written back without losing a quoted value."""
    text = r"user=rep password='it\'s a \\ secret'  host = 10.0.0.1 port=5432 application_name=db-3"
    pairs = parse_conninfo(text)
    assert pairs["password"] == "it's a \\ secret"
    assert parse_conninfo(format_conninfo(pairs)) == pairs
    assert pairs["host"] == "10.0.0.1"
    assert pairs["application_name"] == "db-3"


# --- freeze / thaw ---------------------------------------------------------------------------


async def write_acknowledged(server: Server, stop: asyncio.Event, acked: list[int]) -> None:
    """Insert numbered rows until `stop`; record each id once its commit is acknowledged."""
    conn = await asyncpg.connect(**server.dsn_socket)
    try:
        n = 0
        while not stop.is_set():
            n += 1
            await conn.execute("INSERT INTO writes (id) VALUES ($1)", n)
            acked.append(n)
    finally:
        await conn.close()


async def test_freeze_while_writes_run_loses_nothing(pg: Clusters) -> None:
    """Writes go on through a freeze and after the thaw; every acknowledged row is there.
    The freeze is idempotent; the thaw reports the window and the backup label."""
    primary = pg.primary()
    primary.sql("CREATE TABLE writes (id int PRIMARY KEY)")
    stop, acked = asyncio.Event(), list[int]()
    writer = asyncio.create_task(write_acknowledged(primary, stop, acked))
    async with agent_of(primary) as actions:
        await until(lambda: _async(len(acked) > 10), "no writes before the freeze")
        frozen = await actions["freeze"]({"label": "test-1"})
        again = await actions["freeze"]({"label": "test-1"})
        during = len(acked)
        await until(lambda: _async(len(acked) > during + 10), "writes stopped while frozen")
        thawed = await actions["thaw"]({})
        after = len(acked)
        await until(lambda: _async(len(acked) > after + 10), "writes did not resume")
        twice = await actions["thaw"]({})
    stop.set()
    await writer
    assert frozen["frozen"] is True
    assert frozen["already_frozen"] is False
    assert again["already_frozen"] is True
    assert thawed["was_frozen"] is True
    assert thawed["auto_thawed"] is False
    assert thawed["writes_blocked_s"] == 0.0  # no fsfreeze configured
    assert "LABEL: test-1" in str(thawed["backup_label"])
    assert twice["was_frozen"] is False
    stored = {int(x) for x in primary.sql("SELECT id FROM writes").split()}
    assert set(acked) <= stored


async def _async(value: bool) -> bool:
    return value


def write_agent_config(tmp_path: Path, server: Server, **postgres: Any) -> tuple[Path, int, bytes]:
    secret = b"pg-agent-secret-0123456789abcdef"
    (tmp_path / "secret").write_bytes(secret)
    (tmp_path / "secret").chmod(0o600)
    port = free_port()
    pg_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in postgres.items())
    (tmp_path / "agent.toml").write_text(
        f'listen = "127.0.0.1:{port}"\nsecret_file = "{tmp_path / "secret"}"\n'
        f'check_timeout = "3s"\nlog_format = "json"\ninstance_id = "{AGENT_ID}"\n'
        f'[[checks]]\nkind = "postgres"\nname = "database"\namcheck_interval = "0s"\n'
        f'[postgres]\nhost = "{server.sockdir}"\nport = {server.port}\n'
        f'actions = ["freeze", "thaw"]\nconnect_timeout = "3s"\n{pg_lines}\n'
    )
    return tmp_path / "agent.toml", port, secret


# The instance id the agent process is configured with (v2 signs for one agent).
AGENT_ID = "i-0a1b2c3d4e5f60718"

CALLER = """
import sys, time, urllib.request
from drwatch.agent.wire import signed_headers
port, secret = sys.argv[1], sys.argv[2].encode()
path, body = "/v1/actions/freeze", b'{"params": {"label": "caller-died"}}'
headers = signed_headers(secret, "POST", path, body, now=time.time(), target=sys.argv[3])
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
print(urllib.request.urlopen(req, timeout=30).read().decode(), flush=True)
time.sleep(600)
"""


async def facts_of(port: int, secret: bytes) -> dict[str, Any]:
    path = "/v1/facts"
    headers = signed_headers(secret, "GET", path, b"", now=time.time(), target=AGENT_ID)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp,
    ):
        assert resp.status == 200
        facts: dict[str, Any] = await resp.json()
        return facts


@contextlib.asynccontextmanager
async def agent_process(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "drwatch.cli", "agent", "--config", str(config)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def freeze_sessions(server: Server) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'drwatch-agent-freeze'"
    return int(server.sql(query))


async def test_a_freeze_outlives_its_killed_caller_and_thaws_itself(
    pg: Clusters, tmp_path: Path
) -> None:
    """`drwatch agent` as its own process; a caller freezes through it and is SIGKILLed.
    The freeze stays with the agent, which ends it by itself after max_freeze: its
    session is gone, the facts say frozen false and auto-thawed, and thaw finds nothing."""
    primary = pg.primary()
    config, port, secret = write_agent_config(tmp_path, primary, max_freeze="2s")
    async with agent_process(config):

        async def answering() -> bool:
            try:
                facts = await facts_of(port, secret)
                return bool(facts["checks"]["database"]["status"] == "ok")
            except (aiohttp.ClientError, AssertionError):
                return False

        await until(answering, "the agent never answered", deadline_s=30)
        caller = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CALLER, str(port), secret.decode(), AGENT_ID,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert caller.stdout is not None
        async with asyncio.timeout(30):
            answer = json.loads(await caller.stdout.readline())
        assert answer["result"]["frozen"] is True
        assert freeze_sessions(primary) == 1
        caller.kill()
        await caller.wait()

        async def thawed() -> dict[str, Any] | None:
            data: dict[str, Any] = (await facts_of(port, secret))["checks"]["database"]["data"]
            return data if data["frozen"] is False and "last_freeze_s" in data else None

        data = await until(thawed, "the agent never thawed by itself", deadline_s=30)
    assert data["last_freeze_auto"] is True
    assert float(data["last_freeze_s"]) >= 2.0  # it waited for max_freeze, then thawed
    assert freeze_sessions(primary) == 0


async def test_fsfreeze_runs_around_the_backup_and_on_auto_thaw(
    pg: Clusters, tmp_path: Path
) -> None:
    """With `fsfreeze_mount`, the filesystem is frozen after pg_backup_start and unfrozen
    before pg_backup_stop, by the thaw and by the auto-thaw alike. (A stand-in binary
    records the calls: freezing this machine's real filesystem would stall every test.)"""
    primary = pg.primary()
    record = tmp_path / "calls"
    fake = tmp_path / "fsfreeze"
    fake.write_text(f'#!/bin/sh\necho "$1 $2" >> {record}\n')
    fake.chmod(0o755)
    cfg = pg_config(
        primary, actions=["freeze", "thaw"], fsfreeze_mount=str(tmp_path),
        fsfreeze_binary=str(fake), max_freeze="1s",
    )  # fmt: skip
    async with Postgres(cfg) as running:
        freezer = Freezer(running)
        await freezer.freeze({})
        manual = await freezer.thaw({})
        await freezer.freeze({})

        async def auto_thawed() -> bool:
            return bool(running.extra.get("frozen") is False)

        await until(auto_thawed, "no auto-thaw")
        check = PostgresCheck(check_config(), running, timeout=5.0)
        facts = await check.run()
    assert record.read_text().split("\n")[:4] == [
        f"--freeze {tmp_path}",
        f"--unfreeze {tmp_path}",
        f"--freeze {tmp_path}",
        f"--unfreeze {tmp_path}",
    ]
    assert float(str(manual["writes_blocked_s"])) > 0
    assert facts.data["last_freeze_auto"] is True


async def test_a_real_fsfreeze_blocks_writes_until_the_thaw(pg: Clusters) -> None:
    """The data directory on a filesystem of its own (a loop device), frozen for real:
    while frozen no further insert commits; after the thaw writes resume, the thaw says
    how long they were blocked, and every acknowledged row is there."""
    fsfreeze = need_binary("fsfreeze", "/usr/sbin", "/sbin")
    with loop_filesystem(256) as mount:
        if mount is None:
            pytest.skip("mounting a loop filesystem needs root and a loop device")
        primary = pg.primary(data=mount / "data", options={"fsync": "on"})
        try:
            primary.sql("CREATE TABLE writes (id int PRIMARY KEY)")
            cfg = pg_config(
                primary, actions=["freeze", "thaw"], fsfreeze_mount=str(mount),
                fsfreeze_binary=fsfreeze, max_freeze="30s",
            )  # fmt: skip
            stop, acked = asyncio.Event(), list[int]()
            writer = asyncio.create_task(write_acknowledged(primary, stop, acked))
            async with Postgres(cfg) as running:
                freezer = Freezer(running)
                await until(lambda: _async(len(acked) > 10), "no writes before the freeze")
                frozen = await freezer.freeze({})
                at_freeze = len(acked)
                await asyncio.sleep(1.0)  # a while frozen: not a duration under test
                while_frozen = len(acked)
                thawed = await freezer.thaw({})
                after = len(acked)
                await until(lambda: _async(len(acked) > after + 10), "writes did not resume")
            stop.set()
            await writer
            stored = {int(x) for x in primary.sql("SELECT id FROM writes").split()}
        finally:
            pg.stop_all()  # before the filesystem goes
    assert frozen["fs_frozen"] is True
    assert while_frozen - at_freeze <= 1  # at most the commit already in flight
    assert float(str(thawed["writes_blocked_s"])) >= 1.0
    assert set(acked) <= stored
