"""A dump cancelled by a replication conflict, on real PostgreSQL 15: pg_dump runs on the
replica and holds its table lock while the primary drops that table; the replica's
recovery cancels the dump (max_standby_streaming_delay), pg_dump exits non-zero, and the
run is failed with PostgreSQL's reason: nothing counted, nothing left in the bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.config import Location
from drwatch.backup.dump import PgEndpoint, replica_dump
from drwatch.backup.gpg import Recipient
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    PgPair,
    gpg_keys,
    pg_pair,
)

pytestmark = pytest.mark.services
MIB = 1024 * 1024
T0 = 1_796_000_000.0
ROWS = 400_000


@pytest.fixture(scope="module")
def conflicting(pg_pair: PgPair) -> PgPair:  # noqa: F811
    """The pair, with a table big enough that pg_dump is still writing it when held, and
    a replica that cancels conflicting queries at once (as a short
    max_standby_streaming_delay does under load)."""
    pg_pair.psql(pg_pair.replica_port, "ALTER SYSTEM SET max_standby_streaming_delay = '100ms'")
    pg_pair.psql(pg_pair.replica_port, "SELECT pg_reload_conf()")
    pg_pair.psql(
        pg_pair.primary_port,
        f"CREATE TABLE bulk AS SELECT i, md5(i::text) AS note FROM generate_series(1, {ROWS}) i",
    )
    deadline = time.monotonic() + 30
    while pg_pair.psql(pg_pair.replica_port, "SELECT to_regclass('bulk') IS NOT NULL") != "t":
        assert time.monotonic() < deadline, "the replica never replayed the table"
        time.sleep(0.1)
    return pg_pair


@pytest.fixture
async def place(moto: MotoServer) -> AsyncIterator[Place]:
    loc = Location(bucket="conflict-primary", region="us-east-1", endpoint=moto.url)
    async with S3Store("primary", loc) as store:
        await store.ensure_bucket()
        yield Place(store, "drwatch")


def held(source: Source, started: asyncio.Event, release: asyncio.Event) -> Source:
    """The dump's stream, paused after its first block until `release`: pg_dump keeps
    its snapshot and table locks open on the replica meanwhile."""

    async def stream() -> AsyncIterator[bytes]:
        async for block in source.stream:
            yield block
            if not started.is_set():
                started.set()
                await release.wait()

    return Source(stream(), source.identity, source.consistent_at, source.expected_size)


def replayed_drop(pair: PgPair) -> bool:
    """The replica replayed the DROP: its recovery got past the dump's lock, which it
    can only do by cancelling the dump (the dump still holds it, paused)."""
    return pair.psql(pair.replica_port, "SELECT to_regclass('bulk') IS NULL") == "t"


async def test_a_dump_cancelled_by_a_replication_conflict_fails_and_leaves_nothing(
    conflicting: PgPair,
    gpg_keys: Keys,  # noqa: F811
    place: Place,
    tmp_path: Path,
) -> None:
    """The primary drops the table the replica's pg_dump is reading: recovery cancels the
    dump, the run is `failed` with pg_dump's exit and PostgreSQL's reason, and no object
    or open multipart upload is left."""
    rcpt = await Recipient.load(
        gpg_keys.gpg, gpg_keys.good.public_file, gpg_keys.good.fingerprint,
        tmp_path / "gnupg", now=T0,
    )  # fmt: skip
    catalogue = SqliteCatalogue(tmp_path / "state")
    runner = BackupRunner(
        catalogue, {"primary": place}, Pipeline(rcpt, chunk_size=5 * MIB), rcpt.key_ids,
        clock=lambda: T0,
    )  # fmt: skip
    started, release = asyncio.Event(), asyncio.Event()
    source = await replica_dump(PgEndpoint("127.0.0.1", conflicting.replica_port))
    run = asyncio.create_task(runner.run_stream("orders", "dump", held(source, started, release)))
    try:
        async with asyncio.timeout(60):
            await started.wait()
        await asyncio.to_thread(conflicting.psql, conflicting.primary_port, "DROP TABLE bulk")
        async with asyncio.timeout(60):  # recovery cancelled the dump's statement
            while not await asyncio.to_thread(replayed_drop, conflicting):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        release.set()
    async with asyncio.timeout(60):
        entries = await run

    assert [(e.location, e.state) for e in entries] == [("primary", State.FAILED)]
    why = entries[0].why
    assert "pg_dump failed (exit 1)" in why
    assert "conflict with recovery" in why
    assert catalogue.entries()[0].state is State.FAILED
    assert await place.store.keys("drwatch/") == []
    assert await place.store.open_uploads("drwatch/") == []
    catalogue.close()
