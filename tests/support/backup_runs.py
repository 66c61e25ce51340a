"""What the backup run tests set up the same way each time: the configured recipient
(the good test key, loaded as drwatch loads it), a catalogue closed after the test, and
a runner over them at a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.gpg import Recipient
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.runner import BackupRunner, Clock, Place
from tests.support.backup_services import Keys

T0 = 1_796_000_000.0


async def load_recipient(keys: Keys, tmp_path: Path) -> Recipient:
    """The good key's public half as the configured recipient, checked at T0."""
    return await Recipient.load(
        keys.gpg, keys.good.public_file, keys.good.fingerprint, tmp_path / "gnupg", now=T0
    )


@pytest.fixture
async def recipient(gpg_keys: Keys, tmp_path: Path) -> Recipient:
    return await load_recipient(gpg_keys, tmp_path)


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[SqliteCatalogue]:
    """The catalogue in the test's state directory, closed after the test."""
    cat = SqliteCatalogue(tmp_path / "state")
    yield cat
    cat.close()


def backup_runner(
    catalogue: SqliteCatalogue,
    places: Mapping[str, Place],
    rcpt: Recipient,
    *,
    chunk_size: int | None = None,
    clock: Clock = lambda: T0,
) -> BackupRunner:
    """A runner encrypting to `rcpt` into `places` (the pipeline's own chunk size unless
    given), recording in `catalogue`."""
    pipeline = Pipeline(rcpt) if chunk_size is None else Pipeline(rcpt, chunk_size=chunk_size)
    return BackupRunner(catalogue, places, pipeline, rcpt.key_ids, clock=clock)
