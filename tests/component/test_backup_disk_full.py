"""Disk full on the database host during a dump: the host's backup path (the agent's
`backup` action: the dump streamed through gpg to the object store) writes nothing to
its disk, so a disk that fills up in the middle of a dump does not stop it, and the
next dump on the still-full disk works too. A real full file system: a small tmpfs
holding the host's gpg home and its temporary directory, filled to ENOSPC mid-dump."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drwatch.agent.backup import BackupAction
from drwatch.backup.config import MIB
from drwatch.backup.model import State
from drwatch.backup.runner import BackupRunner
from drwatch.backup.source import Source
from tests.component.test_backup_pipeline import blocks
from tests.component.test_backup_remote import (  # noqa: F401
    _ready,
    on_host,
    places,
    runner,
    settings,
)
from tests.conftest import MotoServer
from tests.support.backup_runs import catalogue, recipient  # noqa: F401
from tests.support.backup_services import (  # noqa: F401
    Keys,
    gpg_keys,
    offsite,
    offsite_session,
)
from tests.support.services import REQUIRE

pytestmark = pytest.mark.services


@pytest.fixture
def host_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB tmpfs standing for the host's disk; the process's TMPDIR points at it."""
    mount = tmp_path / "host-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    if done.returncode != 0:
        msg = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if REQUIRE:
            pytest.fail(f"DRWATCH_REQUIRE_SERVICES=1 but {msg}")
        pytest.skip(msg)
    monkeypatch.setenv("TMPDIR", str(mount))
    monkeypatch.setattr(tempfile, "tempdir", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=10)


def fill(disk: Path) -> None:
    """Write until the file system says ENOSPC."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while _wrote(fd):
            pass
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="No space left"):
        (disk / "probe").write_bytes(b"x" * 8192)


def _wrote(fd: int) -> bool:
    """One more block written; False once the disk is full (ENOSPC, nothing else)."""
    try:
        os.write(fd, b"\0" * 65536)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        return False
    return True


def filling_dump(size: int, disk: Path) -> Source:
    """A dump whose host's disk fills up after its first block."""

    async def stream() -> AsyncIterator[bytes]:
        first = True
        async for block in blocks(size):
            yield block
            if first:
                fill(disk)
                first = False

    return Source(stream(), {"host": "db-2", "role": "replica"}, {"lsn_before": "0/3000060"})


async def test_a_disk_that_fills_up_during_the_dump_does_not_stop_it(
    moto: MotoServer,
    runner: BackupRunner,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
    host_disk: Path,
) -> None:
    """The host's gpg home and temporary files live on a disk that fills up after the
    dump's first block: the dump (two 5 MiB chunks) is still encrypted, uploaded and
    verified at both locations, and so is the next one, taken on the full disk."""
    later = Source(blocks(3 * MIB), {"host": "db-2"}, {"lsn_before": "0/3000070"})
    dumps = iter([filling_dump(8 * MIB, host_disk), later])
    action = BackupAction(
        settings(moto, gpg_keys, tmp_path, gnupg_home=host_disk / "gnupg"),
        {"dump": lambda: _ready(next(dumps))},
    )
    first = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert {(e.location, e.state) for e in first} == {
        ("primary", State.VERIFIED),
        ("offsite", State.VERIFIED),
    }, [e.why for e in first]
    assert first[0].manifest is not None
    assert len(first[0].manifest.chunks) == 2
    with pytest.raises(OSError, match="No space left"):
        (host_disk / "probe").write_bytes(b"x" * 8192)
    second = await runner.run_remote("orders", "dump", on_host(action, "orders", "dump"))
    assert {e.state for e in second} == {State.VERIFIED}, [e.why for e in second]
