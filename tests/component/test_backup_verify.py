"""Verification, copies and the catalogue against real gpg and two moto servers (the
cloud, with a primary and a standby-region bucket, and the off-site provider)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from drwatch.backup.catalogue import Entry, SqliteCatalogue
from drwatch.backup.config import MIB, Location, Retention
from drwatch.backup.gpg import Recipient
from drwatch.backup.manifest import MANIFEST_NAME, Chunk, Manifest
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline, Target, command_stream
from drwatch.backup.retention import to_prune
from drwatch.backup.rpo import BackupFinding, Objective, compliance, findings
from drwatch.backup.runner import INTERRUPTED, BackupRunner, Place
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from drwatch.backup.verify import copy, verify
from tests.component.test_backup_pipeline import blocks
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    gpg_keys,
    offsite,
    offsite_session,
)

pytestmark = pytest.mark.services

ROOT = "drwatch"
T0 = 1_796_000_000.0
LOCATIONS = ("primary", "standby_region", "offsite")


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def places(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[dict[str, Place]]:
    creds = tmp_path / "offsite.toml"
    creds.write_text('access_key_id = "offsite-key"\nsecret_access_key = "offsite-secret"\n')
    creds.chmod(0o600)
    locations = {
        "primary": Location(bucket="orders-primary", region="us-east-1", endpoint=moto.url),
        "standby_region": Location(bucket="orders-standby", region="us-west-2", endpoint=moto.url),
        "offsite": Location(
            bucket="orders-offsite",
            region="eu-central-1",
            endpoint=offsite.url,
            credentials_file=creds,
        ),
    }
    async with AsyncExitStack() as stack:
        out = {}
        for name, loc in locations.items():
            store = await stack.enter_async_context(S3Store(name, loc))
            await store.ensure_bucket()
            out[name] = Place(store, ROOT)
        yield out


async def load_recipient(keys: Keys, tmp_path: Path) -> Recipient:
    return await Recipient.load(
        keys.gpg, keys.good.public_file, keys.good.fingerprint, tmp_path / "gnupg", now=T0
    )


def source(size: int = 7 * MIB, seed: int = 1) -> Source:
    return Source(
        stream=blocks(size, seed=seed),
        identity={"system_identifier": "7300000000000000001"},
        consistent_at={"lsn": "0/3000060"},
    )


async def flip_byte(place: Place, key: str, at: int = 200) -> None:
    """One byte of the object changed, as the `corrupt-backup` fault does."""
    body = bytearray(b"".join([b async for b in place.store.read(key, MIB)]))
    body[at] ^= 0x01
    await place.store.put(key, bytes(body))


@pytest.fixture
async def runner_parts(
    gpg_keys: Keys,  # noqa: F811
    places: dict[str, Place],
    tmp_path: Path,
) -> AsyncIterator[tuple[BackupRunner, SqliteCatalogue, Clock, Recipient]]:
    rcpt = await load_recipient(gpg_keys, tmp_path)
    catalogue = SqliteCatalogue(tmp_path / "state")
    clock = Clock()
    pipe = Pipeline(rcpt, chunk_size=6 * MIB)
    yield BackupRunner(catalogue, places, pipe, rcpt.key_ids, clock), catalogue, clock, rcpt
    catalogue.close()


async def test_a_backup_is_verified_at_every_location_each_on_its_own(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """Uploaded to the primary, copied to the standby region and off-site (another
    moto process, its own credentials), and each copy checked where it lies."""
    runner, catalogue, _, _ = runner_parts
    entries = await runner.run_stream("orders", "dump", source())

    assert [(e.location, e.state) for e in entries] == [(n, State.VERIFIED) for n in LOCATIONS]
    manifest = entries[0].manifest
    assert manifest is not None
    assert len(manifest.chunks) == 2
    for name, place in places.items():
        keys = await place.store.keys(manifest.prefix(ROOT))
        assert sorted(keys) == sorted(
            [manifest.prefix(ROOT) + c.name for c in manifest.chunks]
            + [manifest.prefix(ROOT) + MANIFEST_NAME]
        ), name
    assert {e.location: e.state for e in catalogue.entries("orders")} == dict.fromkeys(
        LOCATIONS, State.VERIFIED
    )


async def test_a_corrupted_copy_is_found_at_its_location_only(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """A byte changed in the off-site copy after it was verified: re-verification finds
    it corrupt there, while the primary and the standby-region copies stay verified."""
    runner, catalogue, clock, _ = runner_parts
    entries = await runner.run_stream("orders", "dump", source())
    manifest = entries[0].manifest
    assert manifest is not None
    await flip_byte(places["offsite"], manifest.prefix(ROOT) + manifest.chunks[1].name)

    clock.now += 3600
    changed = await runner.reverify(older_than=clock.now)

    assert [(e.location, e.state) for e in changed] == [("offsite", State.CORRUPT)]
    assert "SHA-256 differs" in changed[0].why
    states = {e.location: e.state for e in catalogue.entries("orders")}
    assert states == {
        "primary": State.VERIFIED,
        "standby_region": State.VERIFIED,
        "offsite": State.CORRUPT,
    }


async def test_a_corrupt_newest_backup_leaves_the_older_verified_one_counting(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """Two dumps ten minutes apart; the newer is damaged at the primary. It is reported
    corrupt, the older still counts for the RPO there (its age, not 'none'), and the
    other locations count the newer one."""
    runner, catalogue, clock, _ = runner_parts
    older = await runner.run_stream("orders", "dump", source(seed=1))
    clock.now += 600
    newer = await runner.run_stream("orders", "dump", source(seed=2))
    manifest = newer[0].manifest
    assert manifest is not None
    await flip_byte(places["primary"], manifest.prefix(ROOT) + manifest.chunks[0].name, at=5000)

    clock.now += 60
    await runner.reverify(older_than=clock.now)
    objective = Objective("orders", rpo=900.0, locations=LOCATIONS, since=T0)
    status = {s.location: s for s in compliance(catalogue.entries(), [objective], clock.now, 3)}

    primary = status["primary"]
    assert primary.newest_verified is not None
    assert primary.newest_verified.backup_id == older[0].backup_id
    assert primary.age == 660.0
    assert status["offsite"].age == 60.0
    assert catalogue.get(newer[0].backup_id, "primary").state is State.CORRUPT  # type: ignore[union-attr]
    assert not findings(status.values())
    clock.now += 300  # the older one is now 960 s old at the primary: breached there only
    later = compliance(catalogue.entries(), [objective], clock.now, 3)
    assert [(d.finding, d.location) for d in findings(later)] == [
        (BackupFinding.RPO_BREACHED, "primary")
    ]


async def test_plaintext_uploaded_by_mistake_is_corrupt(
    places: dict[str, Place],
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
) -> None:
    """A tool that uploaded the dump unencrypted, with a manifest whose checksums match
    the plaintext: sizes and SHA-256 agree, and it is still corrupt, loudly."""
    _, _, _, rcpt = runner_parts
    plain = b"PGDMP\x01\x0e\x00" + bytes(range(256)) * 100
    manifest = Manifest(
        backup_id="orders-20261201T000000-0000",
        data_class="orders",
        kind="dump",
        created_at=T0,
        recipient_fingerprint=rcpt.fingerprint,
        key_ids=tuple(rcpt.key_ids),
        compression="none",
        chunks=(Chunk("chunk-00000.gpg", len(plain), hashlib.sha256(plain).hexdigest()),),
        plain_bytes=len(plain),
    )
    place = places["primary"]
    await place.store.put(manifest.prefix(ROOT) + "chunk-00000.gpg", plain)

    verdict = await verify(place.store, manifest, ROOT, rcpt.key_ids)

    assert verdict.state is State.CORRUPT
    assert "not OpenPGP ciphertext" in verdict.why


async def test_ciphertext_to_another_key_is_corrupt(
    gpg_keys: Keys,  # noqa: F811
    places: dict[str, Place],
    tmp_path: Path,
) -> None:
    """Well-formed OpenPGP to someone else's key: we could never decrypt it."""
    good = await load_recipient(gpg_keys, tmp_path)
    other = await Recipient.load(
        gpg_keys.gpg,
        gpg_keys.other.public_file,
        gpg_keys.other.fingerprint,
        tmp_path / "gnupg",
        now=T0,
    )
    place = places["primary"]
    target = Target("orders", "dump", ROOT, {}, {})
    manifest = await Pipeline(other).run(blocks(MIB), place.store, target, now=T0)

    verdict = await verify(place.store, manifest, ROOT, good.key_ids)

    assert verdict.state is State.CORRUPT
    assert "not the configured recipient" in verdict.why
    assert next(iter(other.key_ids)) in verdict.why


async def test_a_manifest_that_disagrees_with_the_objects(
    places: dict[str, Place],
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
) -> None:
    """A good upload checked against manifests that lie: a wrong size, a wrong checksum,
    a chunk that was never uploaded."""
    runner, _, _, rcpt = runner_parts
    entries = await runner.run_stream("orders", "dump", source(3 * MIB))
    good = entries[0].manifest
    assert good is not None
    place = places["primary"]
    first = good.chunks[0]
    cases = {
        "size": (replace(good, chunks=(replace(first, size=first.size + 1),)), State.CORRUPT),
        "sha": (replace(good, chunks=(replace(first, sha256="0" * 64),)), State.CORRUPT),
        "extra": (
            replace(good, chunks=(first, Chunk("chunk-00001.gpg", 10, "0" * 64))),
            State.MISSING,
        ),
    }
    for name, (lying, expected) in cases.items():
        verdict = await verify(place.store, lying, ROOT, rcpt.key_ids)
        assert verdict.state is expected, (name, verdict)
    assert (await verify(place.store, good, ROOT, rcpt.key_ids)).state is State.VERIFIED


async def test_an_offsite_outage_fails_the_copy_there_only(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
    offsite_session: MotoServer,  # noqa: F811
) -> None:
    """The off-site bucket is gone (the provider refuses): the copy fails there with the
    reason, the primary and standby-region copies are verified, and after enough failed
    runs in a row the class is backup_failing off-site only."""
    runner, catalogue, clock, _ = runner_parts
    offsite_session.reset()  # the provider lost the bucket
    for _ in range(3):
        await runner.run_stream("orders", "dump", source(MIB))
        clock.now += 60
    latest = {e.location: e for e in catalogue.entries() if e.created_at == clock.now - 60}
    assert latest["offsite"].state is State.FAILED
    assert "copy failed" in latest["offsite"].why
    assert latest["primary"].state is State.VERIFIED
    objective = Objective("orders", rpo=900.0, locations=LOCATIONS, since=T0)
    diag = findings(compliance(catalogue.entries(), [objective], clock.now, 3))
    assert [(d.finding, d.location) for d in diag] == [(BackupFinding.FAILING, "offsite")]


async def test_an_interrupted_run_is_failed_and_cleaned_at_start(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """A run killed halfway leaves a pending row, an uploaded chunk and an open multipart
    upload; `resume` fails the run, deletes the chunk and aborts the upload."""
    runner, catalogue, _, _ = runner_parts
    task_entries = await runner.run_stream("orders", "dump", source(MIB))
    assert task_entries[0].state is State.VERIFIED
    # What a crash would leave: a "running" row, a stray chunk and an open upload.
    crashed = Entry("orders-crashed-0000", "orders", "dump", "primary", T0 + 1, State.PENDING)
    catalogue.record(crashed)
    store = places["primary"].store
    prefix = f"{ROOT}/orders/dump/orders-crashed-0000/"
    await store.put(prefix + "chunk-00000.gpg", b"half")
    await store.create_multipart(prefix + "chunk-00001.gpg")

    failed = await runner.resume()

    assert {(e.backup_id, e.state, e.why) for e in failed} == {
        ("orders-crashed-0000", State.FAILED, INTERRUPTED),
        ("orders-crashed-0000", State.FAILED, f"not copied: {INTERRUPTED}"),
    }
    assert await store.keys(prefix) == []
    assert await store.open_uploads(ROOT) == []
    assert len([e for e in catalogue.entries() if e.state is State.VERIFIED]) == 3


async def test_copy_streams_chunks_larger_than_a_part(
    gpg_keys: Keys,  # noqa: F811
    places: dict[str, Place],
    tmp_path: Path,
) -> None:
    """A 13 MiB object goes to the off-site provider in three parts and verifies there."""
    rcpt = await load_recipient(gpg_keys, tmp_path)
    src, dst = places["primary"], places["offsite"]
    target = Target("orders", "dump", ROOT, {}, {})
    manifest = await Pipeline(rcpt).run(blocks(13 * MIB), src.store, target, now=T0)
    assert manifest.chunks[0].size > 10 * MIB

    await copy(src.store, dst.store, manifest, ROOT, ROOT)

    assert (await verify(dst.store, manifest, ROOT, rcpt.key_ids)).state is State.VERIFIED
    assert await dst.store.open_uploads(ROOT) == []


async def test_retention_deletes_old_backups_at_one_location_only(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """Three dumps; the primary keeps two: the oldest's objects go from the primary and
    its row is forgotten there, while the standby and off-site copies stay."""
    runner, catalogue, clock, _ = runner_parts
    runs = []
    for seed in (1, 2, 3):
        runs.append(await runner.run_stream("orders", "dump", source(MIB, seed=seed)))
        clock.now += 60
    rules = {"primary": Retention(keep=2), "standby_region": Retention(), "offsite": Retention()}

    done = await runner.prune(to_prune(catalogue.entries(), rules, clock.now))

    oldest = runs[0][0]
    assert [(e.backup_id, e.location) for e in done] == [(oldest.backup_id, "primary")]
    assert oldest.manifest is not None
    prefix = oldest.manifest.prefix(ROOT)
    assert await places["primary"].store.keys(prefix) == []
    assert len(await places["offsite"].store.keys(prefix)) == 2  # chunk and manifest
    assert catalogue.get(oldest.backup_id, "primary") is None
    assert catalogue.get(oldest.backup_id, "offsite") is not None


async def test_reverification_reads_the_backup_the_rpo_rests_on(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
    places: dict[str, Place],
) -> None:
    """Only the newest verified backup per location is read again each pass (not every
    retained one); once it turns corrupt, the next older one is checked next pass."""
    runner, catalogue, clock, _ = runner_parts
    older = (await runner.run_stream("orders", "dump", source(MIB, seed=1)))[0]
    clock.now += 60
    newer = (await runner.run_stream("orders", "dump", source(MIB, seed=2)))[0]
    for entry in (older, newer):
        assert entry.manifest is not None
        chunk = entry.manifest.prefix(ROOT) + entry.manifest.chunks[0].name
        await flip_byte(places["primary"], chunk)

    clock.now += 3600
    first = await runner.reverify(older_than=clock.now)
    clock.now += 3600
    second = await runner.reverify(older_than=clock.now)

    assert [(e.backup_id, e.location, e.state) for e in first] == [
        (newer.backup_id, "primary", State.CORRUPT)
    ]
    assert [(e.backup_id, e.location, e.state) for e in second] == [
        (older.backup_id, "primary", State.CORRUPT)
    ]
    assert catalogue.get(newer.backup_id, "offsite").state is State.VERIFIED  # type: ignore[union-attr]


async def test_a_source_command_that_cannot_start_is_a_failed_run(
    runner_parts: tuple[BackupRunner, SqliteCatalogue, Clock, Recipient],
) -> None:
    """pg_dump missing on this host: the run is recorded failed everywhere, with why."""
    runner, catalogue, _, _ = runner_parts
    broken = Source(command_stream(["/nonexistent/pg_dump"]), {}, {})
    entries = await runner.run_stream("orders", "dump", broken)
    assert {e.state for e in entries} == {State.FAILED}
    assert "/nonexistent/pg_dump" in entries[0].why
    assert {e.location for e in catalogue.entries()} == set(LOCATIONS)
