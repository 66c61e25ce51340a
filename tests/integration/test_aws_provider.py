"""AwsProvider against a real moto_server: every Compute method once, and the Inventory."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import AioSession

from drwatch.config import ProviderConfig
from drwatch.errors import ProviderError
from drwatch.model.fleet import InstanceState
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import LaunchSpec, StatusCheck
from tests.conftest import MotoServer

pytestmark = pytest.mark.services

US, EU = "us-east-1", "eu-west-1"


@pytest.fixture
async def aws(moto: MotoServer) -> AsyncIterator[AwsProvider]:
    cfg = ProviderConfig(regions=[US, EU], endpoints={US: moto.url, EU: moto.url})
    async with AwsProvider(cfg, connect_timeout=2.0, read_timeout=10.0) as provider:
        yield provider


@pytest.fixture
async def ec2(moto: MotoServer) -> AsyncIterator[Any]:
    """A raw EC2 client for what drwatch never does itself (allocate an EIP, read UserData)."""
    async with AioSession().create_client("ec2", region_name=US, endpoint_url=moto.url) as c:
        yield c


def launch(zone: str, token: str, name: str, user_data: str = "") -> LaunchSpec:
    return LaunchSpec(
        region=US,
        zone=zone,
        image_id="ami-12345678",
        client_token=token,
        user_data=user_data,
        tags=(("Name", name), ("drwatch:group", "app")),
    )


async def test_launch_twice_with_one_client_token_makes_one_instance(
    aws: AwsProvider, ec2: Any
) -> None:
    """A retried launch returns the first instance: one instance, placed, tagged, with data."""
    spec = launch("us-east-1b", "replace-app-3-1", "app-7", user_data="DB=10.0.0.5\n")
    first = await aws.run_instance(spec)
    second = await aws.run_instance(spec)
    assert first == second
    (inst,) = await aws.instances(US)
    assert (inst.id, inst.zone, inst.state) == (first, "us-east-1b", InstanceState.RUNNING)
    assert inst.tag("Name") == "app-7"
    assert inst.image_id == "ami-12345678"
    attr = await ec2.describe_instance_attribute(InstanceId=first, Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]).decode() == "DB=10.0.0.5\n"


async def test_eip_moves_to_another_instance(aws: AwsProvider, ec2: Any) -> None:
    """associate_address reassociates an EIP already held by another instance."""
    a = await aws.run_instance(launch("us-east-1a", "t-a", "lb-1"))
    b = await aws.run_instance(launch("us-east-1b", "t-b", "lb-2"))
    alloc = (await ec2.allocate_address(Domain="vpc"))["AllocationId"]
    await aws.associate_address(US, alloc, a)
    await aws.associate_address(US, alloc, b)
    (addr,) = await aws.addresses(US)
    assert (addr.allocation_id, addr.instance_id) == (alloc, b)
    assert addr.association_id is not None
    by_id = {i.id: i for i in await aws.instances(US)}
    assert by_id[b].public_ip == addr.public_ip


async def test_snapshot_restore_attach_detach(aws: AwsProvider) -> None:
    """Snapshot a volume, restore it in a zone, attach it, refuse what AWS refuses
    (in-use volume, other zone), detach it naming the instance."""
    a = await aws.run_instance(launch("us-east-1a", "t-a", "db-1"))
    b = await aws.run_instance(launch("us-east-1a", "t-b", "db-2"))
    c = await aws.run_instance(launch("us-east-1c", "t-c", "db-3"))
    (root,) = next(i for i in await aws.instances(US) if i.id == a).volumes
    snap = await aws.create_snapshot(US, root, (("Name", "db-1-data-snap-1"),))
    (seen_snap,) = await aws.snapshots(US)
    assert (seen_snap.id, seen_snap.volume_id) == (snap, root)
    assert seen_snap.tags == (("Name", "db-1-data-snap-1"),)
    vol = await aws.create_volume(US, "us-east-1a", snap, (("Name", "db-1-data"),), size_gib=20)
    await aws.attach_volume(US, vol, a, "/dev/sdf")
    info = {v.id: v for v in await aws.volumes(US)}[vol]
    assert (info.state, info.attached_to, info.size_gib, info.snapshot_id) == (
        "in-use",
        a,
        20,
        snap,
    )
    with pytest.raises(ProviderError) as in_use:
        await aws.attach_volume(US, vol, b, "/dev/sdg")
    assert in_use.value.code == "IncorrectState"
    await aws.detach_volume(US, vol, a)
    assert {v.id: v for v in await aws.volumes(US)}[vol].state == "available"
    with pytest.raises(ProviderError) as elsewhere:
        await aws.attach_volume(US, vol, c, "/dev/sdg")
    assert elsewhere.value.code == "InvalidVolume.ZoneMismatch"


async def test_stop_terminate_and_tag(aws: AwsProvider) -> None:
    """Stop and terminate show in the listing at once (moto is instant); tags are added."""
    a = await aws.run_instance(launch("us-east-1a", "t-a", "app-1"))
    b = await aws.run_instance(launch("us-east-1a", "t-b", "app-2"))
    await aws.stop_instance(US, a)
    await aws.terminate_instance(US, b)
    await aws.tag(US, a, (("drwatch:replaced-by", b),))
    by_id = {i.id: i for i in await aws.instances(US)}
    assert by_id[a].state is InstanceState.STOPPED
    assert by_id[b].state is InstanceState.TERMINATED
    assert by_id[a].tag("drwatch:replaced-by") == b
    assert by_id[a].system_status is StatusCheck.NOT_APPLICABLE


async def test_inventory_lists_zones_images_and_is_regional(aws: AwsProvider, ec2: Any) -> None:
    """Zones and owned images are listed per region; eu-west-1 does not see us-east-1."""
    await aws.ping(US)
    image = (await ec2.register_image(Name="app-image", RootDeviceName="/dev/sda1"))["ImageId"]
    await aws.run_instance(launch("us-east-1a", "t-a", "app-1"))
    zones = await aws.zones(US)
    assert "us-east-1a" in {z.name for z in zones}
    assert {z.state for z in zones} == {"available"}
    assert [(i.id, i.name) for i in await aws.images(US)] == [(image, "app-image")]
    assert await aws.instances(EU) == []
    assert await aws.images(EU) == []


async def test_listing_follows_pages(moto: MotoServer, ec2: Any) -> None:
    """With small pages, every instance is still listed with its status (moto pages
    describe_instances by reservation, so each launch is its own reservation)."""
    for _ in range(12):
        await ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
    cfg = ProviderConfig(regions=[US], endpoints={US: moto.url})
    async with AwsProvider(cfg, page_size=5) as aws:
        instances = await aws.instances(US)
        volumes = await aws.volumes(US)
    assert len({i.id for i in instances}) == 12
    assert {i.system_status for i in instances} == {StatusCheck.OK}
    assert len(volumes) == 12


async def test_unknown_instance_is_a_provider_error_with_its_code(aws: AwsProvider) -> None:
    """A ClientError arrives as ProviderError carrying AWS's code, not retryable."""
    with pytest.raises(ProviderError) as err:
        await aws.stop_instance(US, "i-0123456789abcdef0")
    assert err.value.code == "InvalidInstanceID.NotFound"
    assert not err.value.retryable


async def test_create_volume_and_copy_image_are_idempotent_per_token(aws: AwsProvider) -> None:
    """A retried CreateVolume with the same token returns the same volume (by its token
    tag where moto ignores ClientToken). CopyImage passes botocore's validation with its
    token and reaches the endpoint (which knows no such image here)."""
    a = await aws.run_instance(launch("us-east-1a", "t-v", "db-1"))
    (root,) = next(i for i in await aws.instances(US) if i.id == a).volumes
    snap = await aws.create_snapshot(US, root, ())
    first = await aws.create_volume(US, "us-east-1a", snap, (), client_token="vol-tok-1")
    again = await aws.create_volume(US, "us-east-1a", snap, (), client_token="vol-tok-1")
    assert first == again
    assert sum(1 for v in await aws.volumes(US) if v.snapshot_id == snap) == 1
    with pytest.raises(ProviderError) as missing:
        await aws.copy_image(US, US, "ami-00000000000000000", "db-copy", "img-tok-1")
    assert missing.value.code == "InvalidAMIID.NotFound"
