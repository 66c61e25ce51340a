"""Fixed data: a group's image missing in the standby region is copied there, and the
copy still on its way is the warning `image_copy_pending` (group, image, region) in the
status, never an alert, cleared when the copy completes. The real AWS adapter against
moto; moto makes a copied image `available` at once, so the provider here reports the
copy `pending` until the test lets it complete (as EC2 does for minutes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from drwatch.backup.alerting import backup_alerts
from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.fleet import FleetDeps, FleetSources
from drwatch.backup.gpg import Recipient
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.rpo import BackupFinding
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.service import BackupService
from drwatch.backup.store import S3Store
from drwatch.config import ProviderConfig
from drwatch.model.fleet import Fleet
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import ImageInfo
from tests.component.test_backup_fleet import EU, US, Agents, seed, two_region_config
from tests.conftest import MotoServer
from tests.support.backup_services import Keys, gpg_keys  # noqa: F401

pytestmark = pytest.mark.services
NOW = 1_796_000_000.0


class SlowCopies(AwsProvider):
    """The real adapter; the images it copied read `pending` until `complete` is set."""

    def __init__(self, cfg: ProviderConfig) -> None:
        super().__init__(cfg, connect_timeout=2.0, read_timeout=10.0)
        self.copies: set[str] = set()
        self.complete = False

    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str:
        new_id = await super().copy_image(region, source_region, image_id, name, client_token)
        self.copies.add(new_id)
        return new_id

    async def images(self, region: str) -> list[ImageInfo]:
        found = await super().images(region)
        if self.complete:
            return found
        return [replace(i, state="pending") if i.id in self.copies else i for i in found]


@pytest.fixture
async def world(
    moto: MotoServer,
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[tuple[BackupService, FleetSources, SlowCopies]]:
    hosts = seed(moto)  # drwatch-database only in us-east-1, run by the db group
    cfg = two_region_config(gpg_keys, moto, {"images": {"kind": "fixed", "groups": ["db"]}})
    provider = ProviderConfig(regions=[US, EU], endpoints={US: moto.url, EU: moto.url})
    rcpt = await Recipient.load(
        gpg_keys.gpg, gpg_keys.good.public_file, gpg_keys.good.fingerprint,
        tmp_path / "gnupg", now=NOW,
    )  # fmt: skip
    async with (
        SlowCopies(provider) as cloud,
        S3Store("primary", cfg.locations.primary) as store,
    ):
        catalogue = SqliteCatalogue(tmp_path / "state")
        runner = BackupRunner(
            catalogue, {"primary": Place(store, "drwatch")}, Pipeline(rcpt), rcpt.key_ids,
            clock=lambda: NOW,
        )  # fmt: skip
        service = BackupService(cfg, {"images": 600.0}, catalogue, since=NOW, runner=runner)
        deps = FleetDeps(
            fleet=lambda: Fleet(tuple(hosts.values())),
            role=lambda _id: None,
            agents=Agents(),
            cloud=cloud,
            regions=(US, EU),
            standby_region=EU,
        )
        yield service, FleetSources(deps, clock=lambda: NOW), cloud
        catalogue.close()


def pending_copies(service: BackupService, now: float) -> list[dict[str, Any]]:
    found = service.status_part(now)["findings"]
    return [f for f in found if f["finding"] == "image_copy_pending"]


async def check(service: BackupService, sources: FleetSources) -> dict[str, State]:
    """One image check, as the job runs it; the state it recorded per location."""
    entries = await sources.images(service, "images", service.cfg.classes["images"])
    return {e.location: e.state for e in entries}


async def test_an_image_copy_still_pending_is_a_warning_until_it_completes(
    world: tuple[BackupService, FleetSources, SlowCopies],
) -> None:
    """The first check starts the copy; while EC2 still says `pending` every check keeps
    the standby location pending and the status shows image_copy_pending (a warning,
    naming the group, image and region; no alert); once the copy is available the next
    check verifies it and the warning is gone."""
    service, sources, cloud = world
    assert await check(service, sources) == {
        "primary": State.VERIFIED,
        "standby_region": State.PENDING,
    }
    (copy,) = cloud.copies
    (warning,) = pending_copies(service, NOW + 5)
    assert warning["severity"] == "warning"
    assert warning["facts"]["group"] == "db"
    assert warning["facts"]["image"] == "drwatch-database"
    assert warning["facts"]["region"] == EU
    assert copy in warning["evidence"]
    diagnoses = service.findings(NOW + 5)
    assert [d.finding for d in diagnoses] == [BackupFinding.IMAGE_COPY_PENDING]
    assert backup_alerts(diagnoses, NOW + 5) == []

    # Still copying at EC2: found in the region by name, but not usable yet.
    assert (await check(service, sources))["standby_region"] is State.PENDING
    (still,) = pending_copies(service, NOW + 10)
    assert "not completed yet" in still["evidence"]
    assert cloud.copies == {copy}, "no second copy while the first is on its way"

    cloud.complete = True
    assert await check(service, sources) == {
        "primary": State.VERIFIED,
        "standby_region": State.VERIFIED,
    }
    assert pending_copies(service, NOW + 15) == []
    assert service.findings(NOW + 15) == []
