"""The backup pipeline against real gpg and a moto S3 server: chunks, parts, failures."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drwatch.backup.config import MIB, Location
from drwatch.backup.errors import BackupError, StoreError
from drwatch.backup.gpg import Recipient
from drwatch.backup.manifest import MANIFEST_NAME, Manifest
from drwatch.backup.pipeline import Pipeline, Target, command_stream
from drwatch.backup.store import S3Store
from tests.conftest import MotoServer
from tests.support.backup_services import Keys, decrypt, gpg_keys  # noqa: F401

pytestmark = pytest.mark.services

ROOT = "drwatch"
NOW = 1_796_000_000.0


def target(data_class: str = "orders") -> Target:
    return Target(
        data_class=data_class,
        kind="dump",
        root=ROOT,
        source={"system_identifier": "7300000000000000001", "host": "db-2"},
        consistent_at={"lsn": "0/3000060"},
    )


async def blocks(total: int, *, seed: int = 1, block: int = 700_000) -> AsyncIterator[bytes]:
    """`total` pseudo-random (incompressible) bytes, in blocks that do not divide a MiB."""
    rng = random.Random(seed)
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield rng.randbytes(n)
        sent += n


def expected_digest(total: int, *, seed: int = 1, block: int = 700_000) -> str:
    rng, h, sent = random.Random(seed), hashlib.sha256(), 0
    while sent < total:
        n = min(block, total - sent)
        h.update(rng.randbytes(n))
        sent += n
    return h.hexdigest()


@pytest.fixture
async def store(moto: MotoServer) -> AsyncIterator[S3Store]:
    loc = Location(bucket="backups", region="us-east-1", endpoint=moto.url)
    async with S3Store("primary", loc) as s:
        await s.ensure_bucket()
        yield s


async def recipient(keys: Keys, tmp_path: Path, which: str = "good") -> Recipient:
    key = getattr(keys, which)
    return await Recipient.load(
        keys.gpg, key.public_file, key.fingerprint, tmp_path / "gnupg", now=NOW
    )


async def fetch(store: S3Store, key: str) -> bytes:
    return b"".join([b async for b in store.read(key, MIB)])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class FailingStore:
    """A real store whose Nth part upload fails, as a dropped connection would."""

    def __init__(self, inner: S3Store, fail_at_part: int) -> None:
        self._inner = inner
        self.name = inner.name
        self._left = fail_at_part
        self.aborted: list[str] = []

    def __getattr__(self, attr: str) -> object:
        return getattr(self._inner, attr)

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        self._left -= 1
        if self._left == 0:
            raise StoreError(f"{self.name}: upload_part {key}: connection reset", code="Reset")
        return await self._inner.upload_part(key, upload_id, number, data)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self.aborted.append(key)
        await self._inner.abort_multipart(key, upload_id)


async def test_a_stream_of_several_chunks_and_parts_round_trips(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """23 MiB in 12 MiB chunks: two objects of several 5 MiB parts each; each object
    decrypts on its own with the private key and together they are the stream."""
    total = 23 * MIB
    pipe = Pipeline(await recipient(gpg_keys, tmp_path), chunk_size=12 * MIB)
    manifest = await pipe.run(blocks(total), store, target(), now=NOW)

    assert [c.name for c in manifest.chunks] == ["chunk-00000.gpg", "chunk-00001.gpg"]
    assert manifest.plain_bytes == total
    prefix = manifest.prefix(ROOT)
    plain = hashlib.sha256()
    for chunk in manifest.chunks:
        body = await fetch(store, prefix + chunk.name)
        assert len(body) == chunk.size
        assert hashlib.sha256(body).hexdigest() == chunk.sha256
        plain.update(decrypt(gpg_keys, gpg_keys.good, body))
    assert plain.hexdigest() == expected_digest(total)
    stored = Manifest.from_json(await fetch(store, prefix + MANIFEST_NAME))
    assert stored == manifest
    assert stored.recipient_fingerprint == gpg_keys.good.fingerprint
    assert stored.source["system_identifier"] == "7300000000000000001"
    assert stored.consistent_at == {"lsn": "0/3000060"}


async def test_an_upload_failing_halfway_leaves_nothing_behind(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """The 4th part fails (in the second chunk): the multipart upload is aborted, the
    first chunk is deleted, no manifest is written, and the error says what failed."""
    failing = FailingStore(store, fail_at_part=4)
    pipe = Pipeline(await recipient(gpg_keys, tmp_path), chunk_size=12 * MIB)
    with pytest.raises(StoreError, match="connection reset"):
        await pipe.run(blocks(23 * MIB), failing, target(), now=NOW)  # type: ignore[arg-type]

    assert failing.aborted, "the open multipart upload was aborted"
    assert await store.keys(ROOT) == []
    assert await store.open_uploads(ROOT) == []


async def test_an_expired_recipient_key_is_refused_before_any_upload(
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The key's encryption subkey expired in 2020: no usable key, said plainly."""
    with pytest.raises(BackupError, match="no usable encryption key"):
        await recipient(gpg_keys, tmp_path, "expired")


async def test_a_sign_only_key_is_refused(gpg_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """A key that cannot encrypt is no recipient."""
    with pytest.raises(BackupError, match="no usable encryption key"):
        await recipient(gpg_keys, tmp_path, "signing_only")


async def test_a_key_file_holding_another_key_is_refused(
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The configured fingerprint is the good key, the file holds another one."""
    with pytest.raises(BackupError, match="not the configured recipient"):
        await Recipient.load(
            gpg_keys.gpg,
            gpg_keys.other.public_file,
            gpg_keys.good.fingerprint,
            tmp_path / "gnupg",
            now=NOW,
        )


async def test_gpg_missing_is_a_clear_error(gpg_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """No gpg binary: refused when the recipient is loaded, naming the Debian package."""
    with pytest.raises(BackupError, match=r"not installed.*gnupg"):
        await Recipient.load(
            str(tmp_path / "no-such-gpg"),
            gpg_keys.good.public_file,
            gpg_keys.good.fingerprint,
            tmp_path / "gnupg",
            now=NOW,
        )


async def test_gpg_refusing_the_key_mid_run_uploads_nothing(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """A recipient that passed the check but is unusable by the time gpg runs (here the
    expired key, as if the clock moved past its expiry): gpg's refusal comes before any
    object is created."""
    stale = await recipient(gpg_keys, tmp_path)
    expired = Recipient(
        gpg=stale.gpg,
        public_key_file=gpg_keys.expired.public_file,
        fingerprint=gpg_keys.expired.fingerprint,
        key_ids=stale.key_ids,
        homedir=stale.homedir,
    )
    with pytest.raises(BackupError, match=r"gpg --encrypt failed.*Unusable public key"):
        await Pipeline(expired).run(blocks(3 * MIB), store, target(), now=NOW)
    assert await store.keys(ROOT) == []
    assert await store.open_uploads(ROOT) == []


async def test_a_failing_source_command_fails_the_backup(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """A dump command that writes some bytes and then exits 1 (a cancelled dump) is not
    a backup: the error carries its stderr and nothing stays in the bucket."""
    sh = shutil.which("sh")
    assert sh is not None
    argv = [sh, "-c", "head -c 6000000 /dev/urandom; echo 'conflict with recovery' >&2; exit 1"]
    with pytest.raises(BackupError, match=r"exit 1.*conflict with recovery"):
        await Pipeline(await recipient(gpg_keys, tmp_path)).run(
            command_stream(argv), store, target(), now=NOW
        )
    assert await store.keys(ROOT) == []
    assert await store.open_uploads(ROOT) == []


async def test_an_empty_stream_is_one_small_encrypted_object(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """Zero bytes still make one chunk: ciphertext of nothing, which decrypts to nothing."""
    manifest = await Pipeline(await recipient(gpg_keys, tmp_path)).run(
        blocks(0), store, target(), now=NOW
    )
    assert len(manifest.chunks) == 1
    body = await fetch(store, manifest.prefix(ROOT) + manifest.chunks[0].name)
    assert decrypt(gpg_keys, gpg_keys.good, body) == b""


async def test_a_stalled_source_fails_the_run_and_is_stopped(
    gpg_keys: Keys,  # noqa: F811
    store: S3Store,
    tmp_path: Path,
) -> None:
    """A dump that writes a little and then hangs: after the stall timeout the run fails
    with that reason, the command is killed, and nothing stays in the bucket."""
    sh = shutil.which("sh")
    assert sh is not None
    pid_file = tmp_path / "pid"
    argv = [sh, "-c", f"echo $$ > {pid_file}; head -c 1000 /dev/urandom; exec sleep 600"]
    pipe = Pipeline(await recipient(gpg_keys, tmp_path), stall_timeout=0.5)
    with pytest.raises(BackupError, match=r"produced nothing for 0\.5s"):
        await pipe.run(command_stream(argv), store, target(), now=NOW)
    pid = int(pid_file.read_text())
    assert gone(pid), "the stalled command was killed and reaped"
    assert await store.keys(ROOT) == []
    assert await store.open_uploads(ROOT) == []
