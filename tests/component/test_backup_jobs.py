"""Backup jobs on APScheduler, and a real pg_dump of a real PostgreSQL replica going
through gpg to moto, restorable with the private key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from drwatch.backup.catalogue import Entry, SqliteCatalogue
from drwatch.backup.config import MIB, Location
from drwatch.backup.dump import PG_BIN, PgEndpoint, replica_dump
from drwatch.backup.errors import BackupError
from drwatch.backup.gpg import Recipient
from drwatch.backup.jobs import BackupScheduler, Job, first_run
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline, Target, command_stream
from drwatch.backup.restore import Decryptor, into_command, plaintext
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.store import S3Store
from drwatch.cli import main
from tests.component.test_backup_pipeline import blocks
from tests.conftest import MotoServer
from tests.support.backup_runs import (  # noqa: F401
    backup_runner,
    catalogue,
    load_recipient,
    recipient,
)
from tests.support.backup_services import (  # noqa: F401
    Keys,
    PgPair,
    decrypt,
    export_secret,
    gpg_keys,
    pg_pair,
)

T0 = 1_796_000_000.0


def verified(n: int, at: float, kind: str = "dump") -> Entry:
    return Entry(f"orders-{n}", "orders", kind, "primary", at, State.VERIFIED)


@pytest.mark.parametrize(
    ("entries", "now", "expected"),
    [
        ([], T0, T0),
        ([verified(1, T0 - 59)], T0, T0 + 1),
        ([verified(1, T0 - 60)], T0, T0),
        ([verified(1, T0 - 600), verified(2, T0 - 10)], T0, T0 + 50),
        ([verified(1, T0 - 10, kind="volume_snapshot")], T0, T0),
        ([Entry("orders-9", "orders", "dump", "primary", T0 - 10, State.CORRUPT)], T0, T0),
    ],
    ids=["none", "fresh", "exactly-stale", "newest-counts", "other-kind", "corrupt-ignored"],
)
def test_first_run_is_at_once_when_the_newest_verified_is_older_than_the_interval(
    entries: list[Entry], now: float, expected: float
) -> None:
    job = Job("orders", "dump", 60.0, run=asyncio.Event().wait)
    assert first_run(job, entries, now) == expected


async def test_a_stale_class_runs_at_once_and_overlaps_are_skipped() -> None:
    """`orders` has no backup: it runs as soon as the scheduler starts. Its run outlasts
    several intervals and no second run starts meanwhile. `fresh` was verified a moment
    ago: its first run is one interval after that backup, not now."""
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def slow() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    now = time.time()
    sched = BackupScheduler(
        [
            Job("orders", "dump", 0.05, run=slow),
            Job("fresh", "dump", 3600.0, run=slow),
        ]
    )
    fresh = Entry("fresh-1", "fresh", "dump", "primary", now - 10, State.VERIFIED)
    sched.start([fresh], now)
    try:
        async with asyncio.timeout(10):
            await started.wait()
        for _ in range(10):  # ten ticks of the loop at 50 ms: scheduled runs come and go
            await asyncio.sleep(0.05)
        assert runs == 1
        next_fresh = sched.next_run("backup:fresh:dump")
        assert next_fresh is not None
        assert abs(next_fresh - (now - 10 + 3600.0)) < 1.0
    finally:
        release.set()
        sched.shutdown()


def pg_restore(archive: Path, *args: str) -> str:
    out = subprocess.run(
        [str(PG_BIN / "pg_restore"), *args, str(archive)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout.decode()


@pytest.fixture
async def primary_place(moto: MotoServer) -> AsyncIterator[Place]:
    loc = Location(bucket="orders-primary", region="us-east-1", endpoint=moto.url)
    async with S3Store("primary", loc) as store:
        await store.ensure_bucket()
        yield Place(store, "drwatch")


@pytest.fixture
def runner(
    catalogue: SqliteCatalogue,  # noqa: F811
    recipient: Recipient,  # noqa: F811
    primary_place: Place,
) -> BackupRunner:
    """Dumps to the primary place alone, in 5 MiB chunks, recorded in `catalogue`."""
    return backup_runner(catalogue, {"primary": primary_place}, recipient, chunk_size=5 * MIB)


@pytest.mark.services
async def test_a_replica_dump_is_encrypted_uploaded_and_restorable(
    pg_pair: PgPair,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    primary_place: Place,
    tmp_path: Path,
) -> None:
    """pg_dump of the replica streams through gpg to S3; the manifest names the cluster
    and the replay position; the private key decrypts it into an archive that
    pg_restore reads, with the orders table and its 5,000 rows."""
    source = await replica_dump(PgEndpoint("127.0.0.1", pg_pair.replica_port))
    entries = await runner.run_stream("orders", "dump", source)

    assert [(e.location, e.state) for e in entries] == [("primary", State.VERIFIED)]
    manifest = entries[0].manifest
    assert manifest is not None
    system_id = pg_pair.psql(
        pg_pair.primary_port, "SELECT system_identifier FROM pg_control_system()"
    )
    assert manifest.source["system_identifier"] == system_id
    assert manifest.source["role"] == "replica"
    assert manifest.consistent_at["lsn_before"].count("/") == 1
    plain = b"".join(
        [
            decrypt(
                gpg_keys,
                gpg_keys.good,
                b"".join(
                    [
                        b
                        async for b in primary_place.store.read(
                            manifest.prefix("drwatch") + c.name, MIB
                        )
                    ]
                ),
            )
            for c in manifest.chunks
        ]
    )
    assert plain.startswith(b"PGDMP")
    archive = tmp_path / "orders.dump"
    archive.write_bytes(plain)
    listing = pg_restore(archive, "--list")
    assert "TABLE DATA public orders" in listing
    sql = pg_restore(archive, "--data-only", "--table=orders", "-f", "-")
    copy_block = sql.split("COPY public.orders")[1].split("\\.")[0]
    assert len(copy_block.strip().splitlines()) - 1 == 5000


@pytest.mark.services
async def test_a_dump_of_the_primary_is_refused(pg_pair: PgPair) -> None:  # noqa: F811
    """Dumps are taken on a replica, never on the primary (it carries the load)."""
    with pytest.raises(BackupError, match="is a primary: dumps are taken on a replica"):
        await replica_dump(PgEndpoint("127.0.0.1", pg_pair.primary_port))


@pytest.mark.services
async def test_a_dump_of_a_missing_database_fails_the_run(
    pg_pair: PgPair,  # noqa: F811
    runner: BackupRunner,
    primary_place: Place,
) -> None:
    """pg_dump exits non-zero: the run is recorded failed with pg_dump's reason, and
    nothing stays in the bucket."""
    endpoint = PgEndpoint("127.0.0.1", pg_pair.replica_port)
    source = await replica_dump(endpoint)
    argv = [str(PG_BIN / "pg_dump"), *endpoint.conn_args(), "-Fc", "no_such_db"]
    source = replace(source, stream=command_stream(argv))
    entries = await runner.run_stream("orders", "dump", source)

    assert entries[0].state is State.FAILED
    assert "pg_dump failed" in entries[0].why
    assert "no_such_db" in entries[0].why
    assert await primary_place.store.keys("drwatch") == []


@pytest.mark.services
async def test_the_newest_verified_dump_restores_into_a_scratch_database(
    pg_pair: PgPair,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    primary_place: Place,
    tmp_path: Path,
) -> None:
    """The proof: a replica's dump, uploaded and verified, is fetched, checked, decrypted
    with the private key and streamed into pg_restore (never written to disk), and the
    scratch database holds the 5,000 orders."""
    (newest,) = await runner.run_stream(
        "orders", "dump", await replica_dump(PgEndpoint("127.0.0.1", pg_pair.replica_port))
    )
    assert newest.state is State.VERIFIED
    assert newest.manifest is not None
    pg_pair.psql(pg_pair.primary_port, "DROP DATABASE IF EXISTS scratch")
    pg_pair.psql(pg_pair.primary_port, "CREATE DATABASE scratch")
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "backup.key")
    restore = [
        str(PG_BIN / "pg_restore"),
        *PgEndpoint("127.0.0.1", pg_pair.primary_port, database="scratch").conn_args(),
        "--exit-on-error",
        "-d",
        "scratch",
    ]

    async with Decryptor(gpg_keys.gpg, key) as decryptor:
        stream = plaintext(primary_place.store, newest.manifest, "drwatch", decryptor)
        await into_command(stream, restore)

    count = pg_pair.psql(pg_pair.primary_port, "SELECT count(*) FROM orders", db="scratch")
    assert count == "5000"


@pytest.mark.services
async def test_a_restore_refuses_a_chunk_that_differs_from_its_manifest(
    gpg_keys: Keys,  # noqa: F811
    recipient: Recipient,  # noqa: F811
    primary_place: Place,
    tmp_path: Path,
) -> None:
    """A manifest whose checksum does not match the object: the restore fails, saying so."""
    target = Target("orders", "dump", "drwatch", {}, {})
    manifest = await Pipeline(recipient).run(blocks(MIB), primary_place.store, target, now=T0)
    lying = replace(manifest, chunks=(replace(manifest.chunks[0], sha256="0" * 64),))
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "backup.key")
    async with Decryptor(gpg_keys.gpg, key) as decryptor:
        with pytest.raises(BackupError, match="SHA-256 differs from the manifest"):
            async for _ in plaintext(primary_place.store, lying, "drwatch", decryptor):
                pass


def restore_config(tmp_path: Path, moto: MotoServer, keys: Keys) -> Path:
    secret = tmp_path / "agent.secret"
    secret.write_text("0123456789abcdef0123456789abcdef")
    secret.chmod(0o600)
    path = tmp_path / "drwatch.toml"
    path.write_text(
        f"""
[provider]
regions = ["us-east-1"]
[agent]
secret_file = "{secret}"
[[groups]]
name = "db"
role = "database"
select.tags = {{ "drwatch:group" = "db" }}
[backup.recipient]
public_key_file = "{keys.good.public_file}"
fingerprint = "{keys.good.fingerprint}"
[backup.locations.primary]
bucket = "orders-primary"
region = "us-east-1"
endpoint = "{moto.url}"
[backup.locations.offsite]
bucket = "orders-offsite"
region = "us-east-1"
endpoint = "{moto.url}"
credentials_file = "{secret}"
[backup.classes.orders]
kind = "persistent"
groups = ["db"]
"""
    )
    return path


@pytest.mark.services
def test_restore_test_command_restores_the_newest_dump(
    pg_pair: PgPair,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`drwatch backup restore-test`: from the bucket alone (no state directory), the
    newest dump is verified, decrypted with the key file and restored into a scratch
    PostgreSQL it starts; the report gives the rows, the time and the data's age."""

    async def take_two_dumps() -> str:
        loc = Location(bucket="orders-primary", region="us-east-1", endpoint=moto.url)
        rcpt = await load_recipient(gpg_keys, tmp_path)
        async with S3Store("primary", loc) as store:
            await store.ensure_bucket()
            catalogue = SqliteCatalogue(tmp_path / "state")
            clock = iter([time.time() - 600, time.time() - 600, time.time(), time.time()])
            runner = backup_runner(
                catalogue,
                {"primary": Place(store, "drwatch")},
                rcpt,
                clock=lambda: next(clock, time.time()),
            )
            endpoint = PgEndpoint("127.0.0.1", pg_pair.replica_port)
            await runner.run_stream("orders", "dump", await replica_dump(endpoint))
            newest = await runner.run_stream("orders", "dump", await replica_dump(endpoint))
            catalogue.close()
            return newest[0].backup_id

    newest_id = asyncio.run(take_two_dumps())
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "backup.key")
    cfg = restore_config(tmp_path, moto, gpg_keys)

    code = main(
        [
            "backup",
            "restore-test",
            "--config",
            str(cfg),
            "--data-class",
            "orders",
            "--key",
            str(key),
            "--json",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["backup_id"] == newest_id
    assert report["rows"] == 5000
    assert 0 <= report["data_age_s"] < 600
    assert report["restore_s"] > 0
