"""An upload failing halfway, end to end through the runner (real gpg, moto): the
multipart upload is aborted, nothing is left and nothing counts toward the RPO, and the
next run uploads, verifies and copies off-site as if nothing had happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.config import MIB
from drwatch.backup.gpg import Recipient
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.rpo import Objective, compliance
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.source import Source
from tests.component.test_backup_pipeline import FailingStore, blocks
from tests.component.test_backup_remote import places  # noqa: F401
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    gpg_keys,
    offsite,
    offsite_session,
)

pytestmark = pytest.mark.services
T0 = 1_796_000_000.0


def dump(size: int) -> Source:
    return Source(blocks(size), {"host": "db-2", "role": "replica"}, {"lsn_before": "0/1"})


async def test_an_upload_failing_halfway_counts_nothing_and_the_next_run_does(
    moto: MotoServer,
    places: dict[str, Place],  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A 23 MiB dump in 12 MiB chunks; the connection drops on the 3rd part (inside the
    first chunk's multipart upload). The run is failed at every location with the
    reason, its upload aborted, no object or open upload left, the class's RPO rests on
    nothing; the next run verifies at the primary and off-site."""
    rcpt = await Recipient.load(
        gpg_keys.gpg, gpg_keys.good.public_file, gpg_keys.good.fingerprint,
        tmp_path / "gnupg", now=T0,
    )  # fmt: skip
    primary = places["primary"]
    failing = FailingStore(primary.store, fail_at_part=3)  # type: ignore[arg-type]
    catalogue = SqliteCatalogue(tmp_path / "state")
    runner = BackupRunner(
        catalogue,
        {"primary": Place(failing, primary.root), "offsite": places["offsite"]},  # type: ignore[arg-type]
        Pipeline(rcpt, chunk_size=12 * MIB),
        rcpt.key_ids,
        clock=lambda: T0,
    )

    failed = await runner.run_stream("orders", "dump", dump(23 * MIB))
    assert {(e.location, e.state) for e in failed} == {
        ("primary", State.FAILED),
        ("offsite", State.FAILED),
    }
    assert "connection reset" in failed[0].why
    assert failing.aborted, "the open multipart upload was aborted"
    for place in places.values():
        assert await place.store.keys("drwatch/") == []
        assert await place.store.open_uploads("drwatch/") == []
    objective = Objective("orders", 600.0, ("primary", "offsite"), T0)
    assert all(
        s.newest_verified is None for s in compliance(catalogue.entries(), [objective], T0, 3)
    )

    again = await runner.run_stream("orders", "dump", dump(23 * MIB))
    assert {(e.location, e.state) for e in again} == {
        ("primary", State.VERIFIED),
        ("offsite", State.VERIFIED),
    }
    statuses = compliance(catalogue.entries(), [objective], T0 + 1, 3)
    assert {s.newest_verified.backup_id for s in statuses if s.newest_verified} == {
        again[0].backup_id
    }
    catalogue.close()
