"""Backups a host takes itself: the agent's `backup` action encrypts and uploads on the
host (real gpg, moto), drwatch journals the run first, reads the manifest back, verifies
and copies it off-site (a second moto server). A host's answer is never the proof."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.agent.actions import ActionError
from drwatch.agent.backup import BackupAction, UploadSettings
from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.config import MIB, Location
from drwatch.backup.errors import BackupError
from drwatch.backup.gpg import Recipient
from drwatch.backup.model import State
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from tests.component.test_backup_pipeline import blocks
from tests.conftest import MotoServer
from tests.support.backup_runs import T0, backup_runner, catalogue, recipient  # noqa: F401
from tests.support.backup_services import (  # noqa: F401
    Keys,
    decrypt,
    gpg_keys,
    offsite,
    offsite_session,
)

pytestmark = pytest.mark.services


def creds(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text('access_key_id = "k"\nsecret_access_key = "s"\n')
    path.chmod(0o600)
    return path


@pytest.fixture
async def places(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[dict[str, Place]]:
    primary = Location(bucket="b-primary", region="us-east-1", endpoint=moto.url)
    other = Location(
        bucket="b-offsite",
        region="us-east-1",
        endpoint=offsite.url,
        credentials_file=creds(tmp_path, "offsite"),
    )
    async with S3Store("primary", primary) as p, S3Store("offsite", other) as o:
        await p.ensure_bucket()
        await o.ensure_bucket()
        yield {"primary": Place(p, "drwatch"), "offsite": Place(o, "drwatch")}


def settings(moto: MotoServer, keys: Keys, tmp_path: Path, **kw: Any) -> UploadSettings:
    """What a host holds: the public key and its own (write-only) credentials file."""
    loc = Location(
        bucket="b-primary",
        region="us-east-1",
        endpoint=moto.url,
        credentials_file=creds(tmp_path, "host"),
    )
    base: dict[str, Any] = {
        "location": loc,
        "public_key_file": keys.good.public_file,
        "fingerprint": keys.good.fingerprint,
        "gnupg_home": tmp_path / "host-gnupg",
        "chunk_size": 5 * MIB,
    }
    return UploadSettings(**{**base, **kw})


@pytest.fixture
def runner(
    places: dict[str, Place],
    recipient: Recipient,  # noqa: F811
    catalogue: SqliteCatalogue,  # noqa: F811
) -> BackupRunner:
    """drwatch's side: journals each run, reads back, verifies and copies off-site."""
    return backup_runner(catalogue, places, recipient)


def dump_of(size: int, fail_after: int | None = None) -> Source:
    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        async for block in blocks(size):
            if fail_after is not None and sent >= fail_after:
                raise BackupError("pg_dump failed (exit 1): canceling statement due to conflict")
            sent += len(block)
            yield block

    return Source(stream(), {"host": "db-2", "role": "replica"}, {"lsn_before": "0/3000060"})


def on_host(action: BackupAction, data_class: str, kind: str) -> Any:
    """What drwatch.backup.fleet sends through the agent client, called directly."""

    async def produce(backup_id: str, created_at: float) -> object:
        params = {
            "backup_id": backup_id,
            "data_class": data_class,
            "kind": kind,
            "created_at": repr(created_at),
        }
        try:
            return await action(params)
        except ActionError as err:
            raise BackupError(str(err)) from None

    return produce


async def test_a_dump_encrypted_on_the_host_is_verified_and_copied_off_site(
    moto: MotoServer,
    places: dict[str, Place],
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    tmp_path: Path,
) -> None:
    """A dump of several parts is encrypted and uploaded by the host's action; drwatch
    reads the manifest back, finds every chunk OpenPGP to the recipient with the
    manifest's checksum, copies it off-site and verifies it there on its own; the
    ciphertext decrypts to the very bytes the host dumped."""
    size = 12 * MIB
    action = BackupAction(
        settings(moto, gpg_keys, tmp_path), {"dump": lambda: _ready(dump_of(size))}
    )
    entries = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert [(e.location, e.state) for e in entries] == [
        ("primary", State.VERIFIED),
        ("offsite", State.VERIFIED),
    ]
    manifest = entries[0].manifest
    assert manifest is not None
    assert manifest.source == {"host": "db-2", "role": "replica"}
    assert manifest.plain_bytes == size
    assert len(manifest.chunks) == 3  # 5 MiB of plaintext per chunk
    store = places["offsite"].store
    chunk = manifest.prefix("drwatch") + manifest.chunks[0].name
    ciphertext = b"".join([d async for d in store.read(chunk, MIB)])
    expected = b"".join([b async for b in blocks(size)])[: 5 * MIB]
    assert decrypt(gpg_keys, gpg_keys.good, ciphertext) == expected


async def test_a_dump_failing_halfway_leaves_nothing_and_the_next_run_counts(
    moto: MotoServer,
    places: dict[str, Place],
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    tmp_path: Path,
) -> None:
    """The dump dies after 7 MiB (a replication conflict cancels it): the run is failed
    at every location with the reason, no object and no open multipart upload is left
    under the prefix, and the next run is verified."""
    sources = iter([dump_of(12 * MIB, fail_after=7 * MIB), dump_of(6 * MIB)])
    action = BackupAction(
        settings(moto, gpg_keys, tmp_path), {"dump": lambda: _ready(next(sources))}
    )
    failed = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert {e.state for e in failed} == {State.FAILED}
    assert "conflict" in failed[0].why
    store = places["primary"].store
    assert await store.keys("drwatch/") == []
    assert await store.open_uploads("drwatch/") == []
    again = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert {e.state for e in again} == {State.VERIFIED}


async def test_a_wrong_recipient_or_a_missing_gpg_uploads_nothing(
    moto: MotoServer,
    places: dict[str, Place],
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    tmp_path: Path,
) -> None:
    """A host given another key than the configured fingerprint, or without gpg, says
    so and uploads nothing; the run is failed with that reason."""
    wrong = settings(moto, gpg_keys, tmp_path, public_key_file=gpg_keys.other.public_file)
    no_gpg = settings(moto, gpg_keys, tmp_path, gpg_binary="/nonexistent/gpg")
    for cfg, said in ((wrong, "not the configured recipient"), (no_gpg, "not installed")):
        action = BackupAction(cfg, {"dump": lambda: _ready(dump_of(MIB))})
        entries = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
        assert entries[0].state is State.FAILED
        assert said in entries[0].why
    assert await places["primary"].store.keys("drwatch/") == []


async def test_a_host_cannot_pass_off_another_backup_as_the_one_asked_for(
    runner: BackupRunner,
) -> None:
    """The host answers but uploaded nothing under the asked id (or a manifest naming
    another backup): the run fails; what the host says is not counted."""

    async def liar(_backup_id: str, _created_at: float) -> object:
        return {"chunks": 1, "bytes": 100}

    entries = await runner.run_remote("orders", "dump", liar)
    assert {e.state for e in entries} == {State.FAILED}
    assert "not found" in entries[0].why


async def test_the_action_refuses_bad_parameters_and_unknown_kinds(
    moto: MotoServer,
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    action = BackupAction(settings(moto, gpg_keys, tmp_path), {})
    good = {"backup_id": "orders-1", "data_class": "orders", "kind": "dump", "created_at": "1"}
    for params, said in (
        (good, "takes no dump backups"),
        ({**good, "backup_id": "../../etc"}, "backup_id"),
        ({**good, "created_at": "soon"}, "created_at"),
        ({**good, "shell": "rm -rf /"}, "unknown parameter"),
    ):
        with pytest.raises(ActionError, match=said) as err:
            await action(params)
        assert err.value.status == 400


async def _ready(source: Source) -> Source:
    return source


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}  # fmt: skip


async def test_the_host_writes_nothing_to_its_disk_while_it_dumps(
    moto: MotoServer,
    places: dict[str, Place],
    gpg_keys: Keys,  # noqa: F811
    runner: BackupRunner,
    tmp_path: Path,
) -> None:
    """gpg runs without keyring, lock files or random seed file: after the key's first
    check (which leaves an empty trust database), a dump writes no file on the host,
    so a full disk there does not stop it (gpg would otherwise exit 2 on its seed file
    after encrypting everything)."""
    home = tmp_path / "host-gnupg"
    action = BackupAction(
        settings(moto, gpg_keys, tmp_path), {"dump": lambda: _ready(dump_of(MIB))}
    )
    await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    before = files(home)
    assert set(before) <= {"trustdb.gpg"}
    again = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert again[0].state is State.VERIFIED
    assert files(home) == before
