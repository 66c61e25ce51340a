"""`restore_from_dump` on real parts: the agent's restore stream into a real PostgreSQL,
and the watcher's `AgentDumpRestore` feeding it the plaintext the catalogue decrypts
from moto with the watcher's key (real gpg).

The stream is signed like every agent request and cut into frames that each carry an
HMAC; the agent pipes them into `pg_restore --single-transaction`, so a bad stream
(truncated, altered, not a dump, too large) leaves the database as empty as it was."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from drwatch.agent.restore import LocalDatabase, RestoreLimits, Restorer
from drwatch.agent.server import create_app, serving, tls_context
from drwatch.agent.wire import (
    RESTORE_PATH,
    RESTORE_STATUS_ACTION,
    SIGNATURE_HEADER,
    encode_end_frame,
    encode_frame,
    signed_headers,
)
from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.dump import PgEndpoint, replica_dump
from drwatch.backup.gpg import Recipient
from drwatch.backup.ladder import LadderCatalogue
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.restore_stream import AgentDumpRestore, DumpStreamError
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.store import S3Store
from drwatch.model.fleet import Instance
from drwatch.observe.agent import AgentClient
from tests.component.test_agent_client import client_cfg, instance_at
from tests.component.test_agent_server import SECRET, FakeHost, agent_cfg
from tests.component.test_agent_tls import make_agent_cert, make_ca
from tests.component.test_backup_restore_paths import backup_cfg
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    PgPair,
    export_secret,
    gpg_keys,
    pg_pair,
)
from tests.support.postgres import Clusters, Server, clusters

pytestmark = pytest.mark.services
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROWS = 3000
SOURCE_SQL = (
    "CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL);"
    f" INSERT INTO orders (note) SELECT md5(i::text) FROM generate_series(1, {ROWS}) i"
)


@pytest.fixture(scope="module")
def pg() -> Iterator[Clusters]:
    with clusters() as made:
        yield made


@pytest.fixture(scope="module")
def dump_bytes(pg: Clusters) -> bytes:
    """A real `pg_dump -Fc` of a database holding `orders` (in memory: a test's input)."""
    source = pg.primary()
    source.sql(SOURCE_SQL)
    argv = ["/usr/lib/postgresql/15/bin/pg_dump", "-h", str(source.sockdir)]
    argv += ["-p", str(source.port), "-U", "postgres", "-Fc", "postgres"]
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


@pytest.fixture
def target(pg: Clusters) -> Server:
    """An empty primary, as a new database host starts (initdb, nothing restored)."""
    return pg.primary()


class Agent:
    def __init__(self, port: int, client: AgentClient, dump: AgentDumpRestore) -> None:
        self.port = port
        self.instance: Instance = instance_at(port)
        self.client = client
        self.dump = dump


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@web.middleware
async def from_another_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request as the agent would see it from the watcher's own address."""
    return await handler(request.clone(remote="10.1.2.3"))


async def start_agent(
    stack: AsyncExitStack,
    target: Server,
    limits: RestoreLimits | None = None,
    *,
    remote: bool = False,
    tls: Path | None = None,
) -> Agent:
    """The real agent's app restoring into `target`. `remote`: requests look as if they
    came from another host; `tls`: a directory for a test CA and the agent's certificate
    (HTTPS, and the watcher's client verifies against that CA)."""
    db = LocalDatabase(str(target.sockdir), target.port)
    restorer = Restorer(lambda: db, limits)
    app = create_app(
        agent_cfg(),
        FakeHost(),
        {},
        {RESTORE_STATUS_ACTION: restorer.status},
        secret=SECRET,
        hostname="db-new",
        instance_id="i-0db2",
        restorer=restorer,
    )
    if remote:
        app.middlewares.insert(0, from_another_host)
    context, extra = None, {}
    if tls is not None:
        ca = make_ca(tls, "ca")
        cert, key = make_agent_cert(tls, "ca")
        context = tls_context(agent_cfg(tls_cert_file=str(cert), tls_key_file=str(key)))
        extra = {"scheme": "https", "tls_ca_file": str(ca)}
    port = await stack.enter_async_context(serving(app, "127.0.0.1", 0, context))
    session = await stack.enter_async_context(aiohttp.ClientSession())
    cfg = client_cfg(max_response_bytes=64 * 1024, **extra)
    client = AgentClient(cfg, SECRET, session)
    return Agent(port, client, AgentDumpRestore(cfg, SECRET, session, client))


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def relations(server: Server) -> int:
    return int(
        server.sql(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        )
    )


async def test_a_dump_streams_into_an_empty_database_once_and_a_second_stream_does_nothing(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    agent = await start_agent(stack, target)
    assert await agent.dump.restored(agent.instance, "orders-1") is None
    result = await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert (result["backup_id"], result["bytes"], result["already"]) == (
        "orders-1", len(dump_bytes), False,
    )  # fmt: skip
    assert target.sql("SELECT count(*), count(DISTINCT note) FROM orders") == f"{ROWS}|{ROWS}"
    mark = await agent.dump.restored(agent.instance, "orders-1")
    assert mark is not None
    assert mark["bytes"] == len(dump_bytes)
    again = await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert again["already"] is True
    assert target.sql("SELECT count(*) FROM orders") == str(ROWS)
    with pytest.raises(DumpStreamError, match="already holds dump orders-1"):
        await agent.dump.restore(agent.instance, "orders-2", chunks(dump_bytes))
    assert await agent.dump.restored(agent.instance, "orders-2") is None


async def test_a_database_that_holds_tables_is_never_restored_over(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    target.sql("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    agent = await start_agent(stack, target)
    with pytest.raises(DumpStreamError, match=r"409: database not empty \(1 relations"):
        await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert target.sql("SELECT count(*) FROM precious") == "1"
    assert relations(target) == 1


async def test_a_stream_that_is_not_a_dump_is_refused_and_restores_nothing(
    stack: AsyncExitStack, target: Server
) -> None:
    agent = await start_agent(stack, target)
    with pytest.raises(DumpStreamError, match="422: not a dump"):
        await agent.dump.restore(agent.instance, "orders-1", chunks(b"SELECT 1;\n" * 5000))
    assert relations(target) == 0
    assert await agent.dump.restored(agent.instance, "orders-1") is None


async def test_a_stream_larger_than_the_agents_bound_is_refused_and_restores_nothing(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    agent = await start_agent(stack, target, RestoreLimits(max_bytes=len(dump_bytes) // 2))
    with pytest.raises(DumpStreamError, match="400: bad stream: stream larger than"):
        await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert relations(target) == 0


async def raw_stream(agent: Agent, frames: list[bytes] | None, data: bytes) -> tuple[int, str]:
    """Send a hand-made stream: `frames` None means the honest frames of `data` minus
    the end frame; otherwise the given bytes after the signed headers."""
    path = f"{RESTORE_PATH}?backup_id=orders-1"
    headers = signed_headers(SECRET, "POST", path, b"", now=time.time(), target="i-0db2")
    sig = headers[SIGNATURE_HEADER]
    if frames is None:
        frames = [encode_frame(SECRET, sig, n, data[i : i + 65536])
                  for n, i in enumerate(range(0, len(data), 65536))]  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{agent.port}{path}", headers=headers, data=b"".join(frames)
        ) as resp,  # fmt: skip
    ):
        return resp.status, await resp.text()


async def test_a_truncated_stream_is_refused_and_the_partial_restore_never_commits(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    agent = await start_agent(stack, target)
    status, text = await raw_stream(agent, None, dump_bytes)
    assert status == 400
    assert "truncated" in text
    assert relations(target) == 0
    assert await agent.dump.restored(agent.instance, "orders-1") is None


async def test_an_altered_or_unsigned_frame_is_refused_before_it_is_used(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    agent = await start_agent(stack, target)
    path = f"{RESTORE_PATH}?backup_id=orders-1"
    headers = signed_headers(SECRET, "POST", path, b"", now=time.time(), target="i-0db2")
    sig = headers[SIGNATURE_HEADER]
    first = bytearray(encode_frame(SECRET, sig, 0, dump_bytes[:1000]))
    first[-1] ^= 0x01
    altered = [bytes(first), encode_end_frame(SECRET, sig, 1, 1000)]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{agent.port}{path}", headers=headers, data=b"".join(altered)
        ) as resp,  # fmt: skip
    ):
        assert resp.status == 400
        assert "failed its HMAC" in await resp.text()
    # Frames made with another key (or for another request) fail the same way.
    status, text = await raw_stream(
        agent, [encode_frame(b"another-key", "0" * 64, 0, dump_bytes[:1000])], b""
    )
    assert (status, "frame 0 failed its HMAC" in text) == (400, True)
    assert relations(target) == 0


async def test_the_agent_takes_a_stream_from_another_host_only_over_tls(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes, tmp_path: Path
) -> None:
    """Over plain HTTP, a stream from a non-loopback address is refused (403) and
    nothing is restored; over TLS (verified against the agent's CA) it is restored."""
    plain = await start_agent(stack, target, remote=True)
    with pytest.raises(DumpStreamError, match="403: refusing a dump's plaintext over plain"):
        await plain.dump.restore(plain.instance, "orders-1", chunks(dump_bytes))
    assert relations(target) == 0
    secure = await start_agent(stack, target, remote=True, tls=tmp_path)
    result = await secure.dump.restore(secure.instance, "orders-1", chunks(dump_bytes))
    assert result["bytes"] == len(dump_bytes)
    assert target.sql("SELECT count(*) FROM orders") == str(ROWS)


async def test_plaintext_never_goes_over_plain_http_to_another_host(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    agent = await start_agent(stack, target)
    remote = instance_at(agent.port, tags=(("drwatch:agent-addr", f"10.1.2.3:{agent.port}"),))
    sent: list[bytes] = []

    async def watched() -> AsyncIterator[bytes]:
        async for block in chunks(dump_bytes):
            sent.append(block)
            yield block

    with pytest.raises(DumpStreamError, match="refusing to send a dump's plaintext over plain"):
        await agent.dump.restore(remote, "orders-1", watched())
    assert sent == []


async def test_the_ladders_dump_is_decrypted_from_moto_with_the_watchers_key_and_restored(  # noqa: PLR0917
    stack: AsyncExitStack,
    target: Server,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    pg_pair: PgPair,  # noqa: F811
    moto: MotoServer,
) -> None:
    """A real replica's dump, encrypted to the recipient and uploaded to moto, verified;
    the catalogue's plaintext (gpg --decrypt with the watcher's key, in memory) streamed
    by AgentDumpRestore into an empty PostgreSQL holds every row of the source."""
    cfg = backup_cfg(tmp_path, gpg_keys, moto, None)
    rcpt = await Recipient.load(
        gpg_keys.gpg, gpg_keys.good.public_file, gpg_keys.good.fingerprint,
        tmp_path / "gnupg", now=time.time(),
    )  # fmt: skip
    catalogue = SqliteCatalogue(tmp_path / "state")
    stack.callback(catalogue.close)
    store = await stack.enter_async_context(S3Store("primary", cfg.locations.primary))
    await store.ensure_bucket()
    place = Place(store, "drwatch")
    runner = BackupRunner(catalogue, {"primary": place}, Pipeline(rcpt), rcpt.key_ids, time.time)
    source = await replica_dump(PgEndpoint("127.0.0.1", pg_pair.replica_port))
    (entry,) = await runner.run_stream("orders", "dump", source)
    assert entry.state is State.VERIFIED
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "watcher.key")
    ladder = LadderCatalogue(
        backup_cfg(tmp_path, gpg_keys, moto, key), catalogue, {"primary": place}, rcpt.key_ids
    )
    (ref,) = ladder.dumps("db")
    agent = await start_agent(stack, target)
    result = await agent.dump.restore(agent.instance, ref.backup_id, ladder.plaintext(ref))
    assert result["already"] is False
    want = pg_pair.psql(pg_pair.primary_port, "SELECT count(*), sum(id) FROM orders")
    assert target.sql("SELECT count(*), sum(id) FROM orders") == want
    assert want.startswith("5000|")


async def test_a_restore_that_fails_halfway_leaves_neither_data_nor_mark(
    stack: AsyncExitStack, target: Server, dump_bytes: bytes
) -> None:
    """A domain named like the dump's table (not a relation: the database counts as empty)
    makes the dump's SQL fail partway: psql stops, the one transaction rolls back, and
    no table, sequence or mark is left; the next attempt is not refused as not empty."""
    target.sql("CREATE DOMAIN orders AS int")
    agent = await start_agent(stack, target)
    with pytest.raises(DumpStreamError, match=r"422: the restore failed \(psql\).*orders"):
        await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert relations(target) == 0
    assert await agent.dump.restored(agent.instance, "orders-1") is None
    target.sql("DROP DOMAIN orders")
    result = await agent.dump.restore(agent.instance, "orders-1", chunks(dump_bytes))
    assert result["already"] is False
    assert target.sql("SELECT count(*) FROM orders") == str(ROWS)
