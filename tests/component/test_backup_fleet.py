"""The daemon's real sources over the fleet: a volume snapshot of the primary taken
between the agent's freeze and thaw, copied to the standby region, verified at both
(the real AWS adapter against moto); dumps only ever asked of a replica; images
present in every region. The agents are a recording fake (their own tests cover them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from drwatch.backup.catalogue import SqliteCatalogue
from drwatch.backup.config import BackupConfig
from drwatch.backup.fleet import FleetDeps, FleetSources
from drwatch.backup.gpg import Recipient
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.runner import BackupRunner, Place
from drwatch.backup.service import BackupService
from drwatch.backup.store import S3Store
from drwatch.config import ProviderConfig
from drwatch.errors import DrwatchError
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.providers.aws import AwsProvider
from tests.conftest import MotoServer
from tests.support.backup_services import Keys, gpg_keys  # noqa: F401

pytestmark = pytest.mark.services

US, EU = "us-east-1", "eu-west-1"


class Agents:
    """Records each action in order; `fail` names actions that raise."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    async def action(
        self, instance: Instance, name: str, params: Mapping[str, str], timeout_s: float = 30.0
    ) -> dict[str, object]:
        self.calls.append((instance.name, name))
        if name in self.fail:
            raise DrwatchError(f"{name} refused")
        return {"frozen_s": 0.042, "stop_lsn": "0/5000028"} if name == "thaw" else {}


class RecordingCloud(AwsProvider):
    """The real adapter; it notes when a snapshot is started, to order it against the
    agent's freeze and thaw."""

    def __init__(self, cfg: ProviderConfig, agents: Agents) -> None:
        super().__init__(cfg, connect_timeout=2.0, read_timeout=10.0)
        self.agents = agents

    async def create_snapshot(self, region: str, volume_id: str, tags: Any) -> str:
        self.agents.calls.append(("cloud", "create_snapshot"))
        return await super().create_snapshot(region, volume_id, tags)


def seed(moto: MotoServer) -> dict[str, Instance]:
    """db-1 (primary, with its data volume) and db-2 (replica) in us-east-1; one image
    in us-east-1 only."""
    ec2: Any = boto3.client("ec2", region_name=US, endpoint_url=moto.url)
    image = ec2.register_image(Name="drwatch-database", RootDeviceName="/dev/sda1")["ImageId"]
    out = {}
    for name in ("db-1", "db-2"):
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={
            "AvailabilityZone": f"{US}a"})["Instances"][0]  # fmt: skip
        tags = [{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": f"{name}-data"}]}]
        vol = ec2.create_volume(AvailabilityZone=f"{US}a", Size=8, TagSpecifications=tags)
        ec2.attach_volume(
            VolumeId=vol["VolumeId"], InstanceId=inst["InstanceId"], Device="/dev/sdf"
        )
        out[name] = Instance(inst["InstanceId"], name, US, f"{US}a", Role.DATABASE, "db",
                             image_id=image)  # fmt: skip
    return out


def two_region_config(
    keys: Keys, moto: MotoServer, classes: dict[str, dict[str, Any]]
) -> BackupConfig:
    """Backups to the good test key, in a bucket in each region (one moto), of `classes`."""
    return BackupConfig.model_validate(
        {
            "recipient": {
                "public_key_file": str(keys.good.public_file),
                "fingerprint": keys.good.fingerprint,
            },
            "locations": {
                "primary": {"bucket": "b-primary", "region": US, "endpoint": moto.url},
                "standby_region": {"bucket": "b-standby", "region": EU, "endpoint": moto.url},
            },
            "classes": classes,
        }
    )


@pytest.fixture
async def world(
    moto: MotoServer,
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any]]:
    hosts = seed(moto)
    roles = {hosts["db-1"].id: "primary", hosts["db-2"].id: "replica"}
    agents = Agents()
    cfg = two_region_config(
        gpg_keys,
        moto,
        {
            "orders": {"kind": "persistent", "groups": ["db"]},
            "images": {"kind": "fixed", "groups": ["db"]},
        },
    )
    rcpt = await Recipient.load(
        gpg_keys.gpg, gpg_keys.good.public_file, gpg_keys.good.fingerprint,
        tmp_path / "gnupg", now=1_796_000_000.0,
    )  # fmt: skip
    async with (
        RecordingCloud(
            ProviderConfig(regions=[US, EU], endpoints={US: moto.url, EU: moto.url}), agents
        ) as cloud,  # fmt: skip
        S3Store("primary", cfg.locations.primary) as store,
    ):
        await store.ensure_bucket()
        catalogue = SqliteCatalogue(tmp_path / "state")
        runner = BackupRunner(
            catalogue, {"primary": Place(store, "drwatch")}, Pipeline(rcpt), rcpt.key_ids,
            clock=lambda: 1_796_000_000.0,
        )  # fmt: skip
        service = BackupService(
            cfg, {"orders": 600.0, "images": 600.0}, catalogue, since=0.0, runner=runner
        )
        deps = FleetDeps(
            fleet=lambda: Fleet(tuple(hosts.values())),
            role=roles.get,
            agents=agents,
            cloud=cloud,
            regions=(US, EU),
            standby_region=EU,
        )
        yield service, FleetSources(deps), agents, hosts, cloud


async def test_a_snapshot_is_taken_between_freeze_and_thaw_and_copied_to_the_standby_region(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
    moto: MotoServer,
) -> None:
    """The primary (never the replica) is frozen, its data volume's snapshot started,
    then thawed at once; the snapshot is completed in us-east-1, its copy completed in
    eu-west-1, each verified on its own; the freeze time the agent measured is kept."""
    service, sources, agents, hosts, _ = world
    dc = service.cfg.classes["orders"]
    entries = await sources.snapshot(service, "orders", dc)
    assert agents.calls == [("db-1", "freeze"), ("cloud", "create_snapshot"), ("db-1", "thaw")]
    assert [(e.location, e.state) for e in entries] == [
        ("primary", State.VERIFIED),
        ("standby_region", State.VERIFIED),
    ]
    here, there = (e.manifest.source for e in entries if e.manifest is not None)
    assert entries[0].manifest is not None
    assert entries[0].manifest.consistent_at["freeze_s"] == "0.042"
    ec2: Any = boto3.client("ec2", region_name=US, endpoint_url=moto.url)
    snap = ec2.describe_snapshots(SnapshotIds=[here["snapshot_id"]])["Snapshots"][0]
    vol = ec2.describe_volumes(VolumeIds=[snap["VolumeId"]])["Volumes"][0]
    assert vol["Attachments"][0]["InstanceId"] == hosts["db-1"].id
    assert there["region"] == EU
    eu: Any = boto3.client("ec2", region_name=EU, endpoint_url=moto.url)
    assert eu.describe_snapshots(SnapshotIds=[there["snapshot_id"]])["Snapshots"]


async def test_the_database_is_thawed_even_when_the_snapshot_cannot_start(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
) -> None:
    """The provider refuses the snapshot: the thaw still comes right after, and the
    run is failed at the snapshot's locations only (never off-site, where snapshots
    do not go)."""
    service, sources, agents, _, cloud = world

    async def refuse(region: str, volume_id: str, tags: Any) -> str:
        agents.calls.append(("cloud", "create_snapshot"))
        raise DrwatchError("SnapshotLimitExceeded")

    cloud.create_snapshot = refuse
    entries = await sources.snapshot(service, "orders", service.cfg.classes["orders"])
    assert agents.calls[-1] == ("db-1", "thaw")
    assert {(e.location, e.state) for e in entries} == {
        ("primary", State.FAILED),
        ("standby_region", State.FAILED),
    }
    assert "SnapshotLimitExceeded" in entries[0].why


async def test_a_dump_is_asked_of_the_replica_never_the_primary(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
) -> None:
    service, sources, agents, _, _ = world
    agents.fail = frozenset({"backup"})  # the fake uploads nothing: the run fails
    entries = await sources.dump(service, "orders", service.cfg.classes["orders"])
    assert agents.calls == [("db-2", "backup")]
    assert entries[0].state is State.FAILED


async def test_retention_deletes_an_old_snapshot_at_the_provider(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
    moto: MotoServer,
) -> None:
    """Pruning a snapshot entry deletes the snapshot itself; the last verified stays."""
    service, sources, _, _, _ = world
    service.runner_hook(sources.delete_external)
    first = await sources.snapshot(service, "orders", service.cfg.classes["orders"])
    await asyncio.sleep(0)
    assert service.runner is not None
    done = await service.runner.prune([first[0]])
    assert done == [first[0]]
    assert first[0].manifest is not None
    gone = first[0].manifest.source["snapshot_id"]
    ec2: Any = boto3.client("ec2", region_name=US, endpoint_url=moto.url)
    assert gone not in {
        s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    }


async def test_an_image_missing_in_the_standby_region_is_copied_and_pending_until_there(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
) -> None:
    """drwatch-database exists only in us-east-1: verified there; a copy to eu-west-1 is
    started and that location is pending (a warning) until the copy shows; the next
    check finds it and verifies it."""
    service, sources, _, _, _ = world
    dc = service.cfg.classes["images"]
    first = {e.location: e for e in await sources.images(service, "images", dc)}
    assert first["primary"].state is State.VERIFIED
    assert first["standby_region"].state is State.PENDING
    assert "copy" in first["standby_region"].why
    second = {e.location: e for e in await sources.images(service, "images", dc)}
    assert second["standby_region"].state is State.VERIFIED


async def test_a_snapshot_left_by_an_interrupted_run_is_deleted_by_the_next(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
    moto: MotoServer,
) -> None:
    """drwatch stopped after starting a snapshot and before recording it: the snapshot
    carries its run's tags but counts for nothing; the next run deletes it and keeps
    its own."""
    service, sources, _, _, _ = world
    ec2: Any = boto3.client("ec2", region_name=US, endpoint_url=moto.url)
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    tags = [{"Key": "drwatch:backup", "Value": "orders-crashed"},
            {"Key": "drwatch:data-class", "Value": "orders"}]  # fmt: skip
    orphan = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": tags}])["SnapshotId"]  # fmt: skip
    entries = await sources.snapshot(service, "orders", service.cfg.classes["orders"])
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert orphan not in left
    assert entries[0].manifest is not None
    assert entries[0].manifest.source["snapshot_id"] in left


async def test_a_snapshot_still_pending_when_its_run_gave_up_gets_its_verdict_later(
    world: tuple[BackupService, FleetSources, Agents, dict[str, Instance], Any],
) -> None:
    """A run that stopped waiting left its snapshot pending: the next run looks again
    and records it verified (it completed meanwhile), so it is neither lost nor kept
    pending for ever (retention never prunes a pending one)."""
    service, sources, _, _, _ = world
    dc = service.cfg.classes["orders"]
    first = await sources.snapshot(service, "orders", dc)
    stalled = replace(first[0], state=State.PENDING, why="snapshot still pending")
    service.catalogue.record(stalled)
    await sources.snapshot(service, "orders", dc)
    now = {(e.backup_id, e.location): e for e in service.catalogue.entries()}
    assert now[(stalled.backup_id, "primary")].state is State.VERIFIED
