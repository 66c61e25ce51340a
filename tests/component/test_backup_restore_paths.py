"""The automated restore paths with the watcher's own key, on real parts: gpg, moto, and
a real PostgreSQL replica's pg_dump. The database ladder's view of the catalogue
(plaintext decrypted in memory; a bad backup marked and alerted) and the scheduled
restore test (results recorded, overdue when nothing passed)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drwatch.act.base import BackupRef
from drwatch.backup.alerting import backup_alerts
from drwatch.backup.catalogue import Entry, SqliteCatalogue
from drwatch.backup.config import BackupConfig
from drwatch.backup.dump import PgEndpoint, replica_dump
from drwatch.backup.errors import BackupError
from drwatch.backup.gpg import Recipient
from drwatch.backup.ladder import NO_KEY, LadderCatalogue, unrestorable
from drwatch.backup.manifest import Manifest
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.restore_schedule import (
    RestoreTestLog,
    ScheduledRestoreTest,
    manifest_restorer,
)
from drwatch.backup.restore_test import RestoreReport
from drwatch.backup.rpo import BackupFinding
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from tests.component.test_backup_pipeline import blocks, expected_digest
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    PgPair,
    export_secret,
    gpg_keys,
    pg_pair,
)

pytestmark = pytest.mark.services

SIZE = 3 * 1024 * 1024 + 12_345


def backup_cfg(tmp_path: Path, keys: Keys, moto: MotoServer, key: Path | None) -> BackupConfig:
    return BackupConfig.model_validate(
        {
            "recipient": {
                "public_key_file": str(keys.good.public_file),
                "fingerprint": keys.good.fingerprint,
            },
            "watcher_private_key_file": str(key) if key else None,
            "locations": {
                "primary": {
                    "bucket": "orders-primary",
                    "region": "us-east-1",
                    "endpoint": moto.url,
                },
            },
            "classes": {"orders": {"kind": "persistent", "groups": ["db"]}},
            "restore_test": {"every": "1h", "max_age": "2h"},
        }
    )


class World:
    """A catalogue in tmp_path, the primary bucket at moto, and a runner over them."""

    def __init__(self, tmp_path: Path, keys: Keys, store: S3Store, rcpt: Recipient) -> None:
        self.now = time.time()
        self.catalogue = SqliteCatalogue(tmp_path / "state")
        self.place = Place(store, "drwatch")
        self.runner = BackupRunner(
            self.catalogue, {"primary": self.place}, Pipeline(rcpt), rcpt.key_ids, self.clock
        )
        self.key_ids = rcpt.key_ids

    def clock(self) -> float:
        return self.now


async def world_for(tmp_path: Path, keys: Keys, moto: MotoServer) -> AsyncIterator[World]:
    cfg = backup_cfg(tmp_path, keys, moto, None)
    rcpt = await Recipient.load(
        keys.gpg, keys.good.public_file, keys.good.fingerprint, tmp_path / "gnupg", now=time.time()
    )
    async with S3Store("primary", cfg.locations.primary) as store:
        await store.ensure_bucket()
        world = World(tmp_path, keys, store, rcpt)
        try:
            yield world
        finally:
            world.catalogue.close()


@pytest.fixture
async def world(
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> AsyncIterator[World]:
    async for w in world_for(tmp_path, gpg_keys, moto):
        yield w


async def test_the_ladder_gets_a_dumps_plaintext_decrypted_in_memory_with_the_watchers_key(
    world: World,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    """A dump of several chunks, verified: rung 6's stream is exactly the plaintext that
    was backed up, and no file under the watcher's state or temp dirs holds it."""
    (entry,) = await world.runner.run_stream("orders", "dump", Source(blocks(SIZE), {}, {}))
    assert entry.state is State.VERIFIED
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "watcher.key")
    ladder = LadderCatalogue(
        backup_cfg(tmp_path, gpg_keys, moto, key), world.catalogue,
        {"primary": world.place}, world.key_ids,
    )  # fmt: skip
    (ref,) = ladder.dumps("db")
    assert (ref.backup_id, ref.state) == (entry.backup_id, "verified")
    assert ladder.key_missing() is None
    digest, size = hashlib.sha256(), 0
    async for block in ladder.plaintext(ref):
        digest.update(block)
        size += len(block)
    assert (size, digest.hexdigest()) == (SIZE, expected_digest(SIZE))
    assert ladder.dumps("web") == []  # no class holds that group


async def test_without_the_key_the_ladder_says_why_and_reads_nothing(
    world: World,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    await world.runner.run_stream("orders", "dump", Source(blocks(1000), {}, {}))
    ladder = LadderCatalogue(
        backup_cfg(tmp_path, gpg_keys, moto, None), world.catalogue,
        {"primary": world.place}, world.key_ids,
    )  # fmt: skip
    assert ladder.key_missing() == NO_KEY
    (ref,) = ladder.dumps("db")
    with pytest.raises(BackupError, match="holds no private key"):
        async for _ in ladder.plaintext(ref):
            pass


async def test_a_backup_the_ladder_found_bad_is_marked_and_alerted_until_a_newer_verifies(
    world: World,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    (entry,) = await world.runner.run_stream("orders", "dump", Source(blocks(1000), {}, {}))
    ladder = LadderCatalogue(
        backup_cfg(tmp_path, gpg_keys, moto, None), world.catalogue,
        {"primary": world.place}, world.key_ids, clock=world.clock,
    )  # fmt: skip
    ref = BackupRef(entry.backup_id, "orders", "dump", "primary", entry.created_at, "verified")
    ladder.mark_bad(ref, "database.recover (run-1): restored corrupt")
    marked = world.catalogue.get(entry.backup_id, "primary")
    assert marked is not None
    assert (marked.state, marked.why) == (
        State.CORRUPT,
        "database.recover (run-1): restored corrupt",
    )
    assert ladder.dumps("db") == []
    (diag,) = unrestorable(world.catalogue.entries(), world.now + 5)
    assert diag.finding is BackupFinding.UNRESTORABLE
    assert entry.backup_id in diag.message
    assert "database.recover (run-1)" in diag.message
    assert diag.age == 5.0  # since it was found bad: the alert's start stays put
    (alert,) = backup_alerts([diag], world.now + 5)
    assert (alert.alertname, alert.severity) == ("DrwatchBackupUnrestorable", "critical")
    assert alert.started_at == world.now
    world.now += 60
    await world.runner.run_stream("orders", "dump", Source(blocks(1000), {}, {}))
    assert unrestorable(world.catalogue.entries(), world.now) == []


async def test_snapshots_come_from_the_catalogue_only_when_it_holds_some(
    world: World,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    ladder = LadderCatalogue(
        backup_cfg(tmp_path, gpg_keys, moto, None), world.catalogue,
        {"primary": world.place}, world.key_ids,
    )  # fmt: skip
    assert ladder.snapshots("db") is None  # drwatch took none: the provider's are used
    for n, state in ((1, State.VERIFIED), (2, State.CORRUPT)):
        world.catalogue.record(
            Entry(f"snap-{n}", "orders", "volume_snapshot", "primary", 100.0 * n, state)
        )
    snaps = ladder.snapshots("db")
    assert snaps is not None
    assert [(s.backup_id, s.state) for s in snaps] == [
        ("snap-2", "corrupt"),
        ("snap-1", "verified"),
    ]


@pytest.mark.usefixtures("world")
async def test_the_scheduled_restore_test_restores_records_and_is_overdue_without_a_pass(
    world: World,
    pg_pair: PgPair,  # noqa: F811
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    """A real pg_dump of a replica, restored by the schedule's run into a scratch
    PostgreSQL with the watcher's key: the pass is recorded with its rows (and kept over a
    restart). Then the dump's object is damaged: the next run fails with the reason, and
    once max_age passes with no pass the finding says so."""
    key = export_secret(gpg_keys, gpg_keys.good, tmp_path / "watcher.key")
    cfg = backup_cfg(tmp_path, gpg_keys, moto, key)
    started = time.time()
    endpoint = PgEndpoint("127.0.0.1", pg_pair.replica_port)
    (entry,) = await world.runner.run_stream("orders", "dump", await replica_dump(endpoint))
    assert entry.state is State.VERIFIED, entry.why
    log = RestoreTestLog(tmp_path / "state")
    tests = ScheduledRestoreTest(
        cfg, world.catalogue, log, world.place, manifest_restorer(cfg), since=started
    )
    (result,) = await tests.run(time.time)
    assert result.passed, result.why
    assert (result.backup_id, result.rows) == (entry.backup_id, 5000)
    assert result.restore_s > 0
    log.close()

    log = RestoreTestLog(tmp_path / "state")  # a restart keeps the record
    tests = ScheduledRestoreTest(
        cfg, world.catalogue, log, world.place, manifest_restorer(cfg), since=time.time()
    )
    status = tests.status(time.time())
    assert status["enabled"] is True
    assert status["last_passed"]["backup_id"] == entry.backup_id
    assert status["overdue"] is False
    assert tests.findings(result.at + 3600) == []

    assert entry.manifest is not None
    chunk = entry.manifest.prefix("drwatch") + entry.manifest.chunks[0].name
    body = b"".join([b async for b in world.place.store.read(chunk, 1 << 20)])
    await world.place.store.put(chunk, body[:-1] + bytes([body[-1] ^ 1]))
    (failed,) = await tests.run(time.time)
    assert not failed.passed
    assert "SHA-256" in failed.why or "corrupt" in failed.why
    (diag,) = tests.findings(result.at + 2 * 3600 + 1)
    assert diag.finding is BackupFinding.RESTORE_TEST_OVERDUE
    assert "no restore test passed within 2h" in diag.message
    assert "the last failed" in diag.message
    assert tests.status(result.at + 2 * 3600 + 1)["last_passed"]["backup_id"] == entry.backup_id
    log.close()


async def test_without_the_key_the_restore_test_is_not_scheduled_and_says_why(
    world: World,
    tmp_path: Path,
    gpg_keys: Keys,  # noqa: F811
    moto: MotoServer,
) -> None:
    cfg = backup_cfg(tmp_path, gpg_keys, moto, None)
    await world.runner.run_stream("orders", "dump", Source(blocks(1000), {}, {}))
    log = RestoreTestLog(tmp_path / "state")

    async def never(place: Place, manifest: Manifest) -> RestoreReport:
        raise AssertionError("no restore without the key")

    tests = ScheduledRestoreTest(
        cfg,
        world.catalogue,
        log,
        world.place,
        never,
        since=0.0,
    )
    assert await tests.run(time.time) == []
    status = tests.status(1e12)
    assert (status["enabled"], status["overdue"]) == (False, False)
    assert "holds no private key" in status["why_not"]
    assert tests.findings(1e12) == []
    log.close()
    await asyncio.sleep(0)
