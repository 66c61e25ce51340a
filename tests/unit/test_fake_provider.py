"""FakeProvider behaves like AWS where moto does not, and counts what it is asked to do."""

from __future__ import annotations

import pytest

from drwatch.errors import (
    ProviderError,
    ProviderThrottledError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from drwatch.model.fleet import InstanceState
from drwatch.providers.base import Compute, LaunchSpec, StatusCheck
from drwatch.providers.fake import FakeProvider

REGION = "us-east-1"


def spec(fake: FakeProvider, zone: str = "us-east-1a", token: str = "tok-1") -> LaunchSpec:
    """A launch spec for an app server; registers a fresh image each time (the fake needs one)."""
    image_id = fake.add_image(REGION, "app").id
    return LaunchSpec(
        region=REGION, zone=zone, image_id=image_id, client_token=token, tags=(("Name", "app-9"),)
    )


async def test_launch_is_idempotent_per_client_token() -> None:
    """A retried launch with the same token returns the same instance and creates no second."""
    fake = FakeProvider()
    compute: Compute = fake  # mypy checks the fake against the protocol here
    s = spec(fake)
    first = await compute.run_instance(s)
    second = await compute.run_instance(s)
    assert first == second
    assert len(await fake.instances(REGION)) == 1
    assert fake.count("run_instance") == 2
    other = await fake.run_instance(spec(fake, token="tok-2"))
    assert other != first


async def test_launched_instance_carries_tags_zone_and_image() -> None:
    """The new instance is running in the asked zone, with the spec's tags and image."""
    fake = FakeProvider()
    s = spec(fake, zone="us-east-1b")
    iid = await fake.run_instance(s)
    (inst,) = await fake.instances(REGION)
    assert (inst.id, inst.zone, inst.state) == (iid, "us-east-1b", InstanceState.RUNNING)
    assert inst.tag("Name") == "app-9"
    assert inst.image_id == s.image_id


async def test_launch_fails_in_failing_or_impaired_zone_and_with_unknown_image() -> None:
    """Launch refusals look like AWS's: no capacity in a bad zone, unknown AMI."""
    fake = FakeProvider()
    fake.fail_launches_in("us-east-1a")
    with pytest.raises(ProviderError) as err:
        await fake.run_instance(spec(fake))
    assert err.value.code == "InsufficientInstanceCapacity"
    fake.set_zone_state("us-east-1b", "impaired")
    with pytest.raises(ProviderError):
        await fake.run_instance(spec(fake, zone="us-east-1b", token="t2"))
    bad = LaunchSpec(region=REGION, zone="us-east-1c", image_id="ami-nope", client_token="t3")
    with pytest.raises(ProviderError) as err:
        await fake.run_instance(bad)
    assert err.value.code == "InvalidAMIID.NotFound"
    assert await fake.instances(REGION) == []


async def test_attach_refuses_in_use_volume_and_other_zone() -> None:
    """AWS refuses an attach of an in-use volume or across zones; so does the fake."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a", name="db-1")
    b = fake.add_instance(REGION, "us-east-1a", name="db-2")
    c = fake.add_instance(REGION, "us-east-1b", name="db-3")
    vol = fake.add_volume(REGION, "us-east-1a", attached_to=a.id)
    with pytest.raises(ProviderError) as err:
        await fake.attach_volume(REGION, vol.id, b.id, "/dev/sdg")
    assert err.value.code == "IncorrectState"
    await fake.detach_volume(REGION, vol.id, a.id)
    with pytest.raises(ProviderError) as err:
        await fake.attach_volume(REGION, vol.id, c.id, "/dev/sdg")
    assert err.value.code == "InvalidVolume.ZoneMismatch"
    await fake.attach_volume(REGION, vol.id, b.id, "/dev/sdg")
    (seen,) = await fake.volumes(REGION)
    assert (seen.state, seen.attached_to, seen.device) == ("in-use", b.id, "/dev/sdg")
    by_id = {i.id: i for i in await fake.instances(REGION)}
    assert by_id[b.id].volumes == (vol.id,)
    assert by_id[a.id].volumes == ()


async def test_detach_requires_the_holding_instance() -> None:
    """Detaching from an instance that does not hold the volume is an error, as on AWS."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a")
    b = fake.add_instance(REGION, "us-east-1a")
    vol = fake.add_volume(REGION, "us-east-1a", attached_to=a.id)
    with pytest.raises(ProviderError) as err:
        await fake.detach_volume(REGION, vol.id, b.id)
    assert err.value.code == "InvalidAttachment.NotFound"


async def test_stop_and_terminate_are_instant_and_observable() -> None:
    """Stopping shows `stopped` at once and keeps the EIP; terminating detaches volumes, frees
    the EIP, and the instance stays listed as terminated until the provider forgets it."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a")
    vol = fake.add_volume(REGION, "us-east-1a", attached_to=a.id)
    eip = fake.add_address(REGION, instance_id=a.id)
    await fake.stop_instance(REGION, a.id)
    (stopped,) = await fake.instances(REGION)
    assert (stopped.state, stopped.public_ip) == (InstanceState.STOPPED, eip.public_ip)
    await fake.terminate_instance(REGION, a.id)
    (inst,) = await fake.instances(REGION)
    assert inst.state is InstanceState.TERMINATED
    vols = {v.id: v for v in await fake.volumes(REGION)}
    assert (vols[vol.id].state, vols[vol.id].attached_to) == ("available", None)
    addrs = {x.allocation_id: x for x in await fake.addresses(REGION)}
    assert addrs[eip.allocation_id].instance_id is None
    fake.forget(a.id)
    assert await fake.instances(REGION) == []


async def test_associate_address_moves_the_eip() -> None:
    """Associating an EIP held elsewhere moves it: the new holder gets the public IP."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a", name="lb-1")
    b = fake.add_instance(REGION, "us-east-1b", name="lb-2")
    eip = fake.add_address(REGION, tags=(("Name", "web-eip"),), instance_id=a.id)
    await fake.associate_address(REGION, eip.allocation_id, b.id)
    (addr,) = await fake.addresses(REGION)
    assert addr.instance_id == b.id
    by_id = {i.id: i for i in await fake.instances(REGION)}
    assert by_id[b.id].public_ip == eip.public_ip
    assert by_id[a.id].public_ip is None
    assert fake.calls == [("associate_address", REGION, eip.allocation_id, b.id)]


async def test_snapshot_then_volume_from_it_in_another_zone() -> None:
    """A snapshot of a volume restores into a new volume of the same size in any zone."""
    fake = FakeProvider()
    vol = fake.add_volume(REGION, "us-east-1a", size_gib=50)
    snap_id = await fake.create_snapshot(REGION, vol.id, (("Name", "db-1-data-snap-4"),))
    new_id = await fake.create_volume(REGION, "us-east-1c", snap_id, (("Name", "db-1-data"),))
    new = next(v for v in await fake.volumes(REGION) if v.id == new_id)
    assert (new.zone, new.size_gib, new.snapshot_id, new.state) == (
        "us-east-1c",
        50,
        snap_id,
        "available",
    )
    snap = next(s for s in await fake.snapshots(REGION) if s.id == snap_id)
    assert snap.volume_id == vol.id
    assert snap.tags == (("Name", "db-1-data-snap-4"),)


async def test_tag_merges_and_unknown_resource_fails() -> None:
    """Tagging adds or replaces keys on any resource; an unknown id is an error."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a", name="app-1")
    await fake.tag(REGION, a.id, (("Name", "app-1-old"), ("role", "x")))
    (inst,) = await fake.instances(REGION)
    assert inst.tags == (("Name", "app-1-old"), ("role", "x"))
    with pytest.raises(ProviderError):
        await fake.tag(REGION, "vol-missing", (("a", "b"),))


async def test_faults_api_down_throttle_and_heal() -> None:
    """Fault knobs raise the errors AwsProvider would, per region, until healed."""
    fake = FakeProvider(regions=(REGION, "eu-west-1"))
    fake.api_down(REGION)
    with pytest.raises(ProviderUnreachableError):
        await fake.instances(REGION)
    assert await fake.instances("eu-west-1") == []
    fake.api_fault("eu-west-1", ProviderTimeoutError("slow"))
    with pytest.raises(ProviderTimeoutError):
        await fake.ping("eu-west-1")
    fake.heal()
    fake.throttle(REGION, 2)
    for _ in range(2):
        with pytest.raises(ProviderThrottledError):
            await fake.zones(REGION)
    assert len(await fake.zones(REGION)) == 3


async def test_impair_sets_status_checks() -> None:
    """`impair` makes the provider report impaired status checks, `ok=True` clears them."""
    fake = FakeProvider()
    a = fake.add_instance(REGION, "us-east-1a")
    fake.impair(a.id, instance=False)
    (inst,) = await fake.instances(REGION)
    assert (inst.system_status, inst.instance_status) == (StatusCheck.IMPAIRED, StatusCheck.OK)
    fake.impair(a.id, ok=True)
    (inst,) = await fake.instances(REGION)
    assert inst.system_status is StatusCheck.OK


async def test_unknown_region_is_unreachable() -> None:
    """A region the fake does not simulate has no endpoint: the call is unreachable."""
    with pytest.raises(ProviderUnreachableError):
        await FakeProvider().instances("ap-south-1")


async def test_one_token_in_another_zone_returns_the_first_instance() -> None:
    """EC2 lets a retry with the same token name another zone and answers with what the
    token made; a refused launch binds nothing; other changed parameters are refused."""
    fake = FakeProvider()
    fake.fail_launches_in("us-east-1b")
    s = spec(fake, zone="us-east-1b")
    with pytest.raises(ProviderError):
        await fake.run_instance(s)
    made = await fake.run_instance(spec_in(s, "us-east-1a"))
    fake.heal()
    assert await fake.run_instance(s) == made
    assert [i.id for i in await fake.instances(REGION)] == [made]
    assert (len(fake.refused), len(fake.replayed)) == (1, 1)
    with pytest.raises(ProviderError) as mismatch:
        await fake.run_instance(spec_in(s, "us-east-1a", user_data="X=1\n"))
    assert mismatch.value.code == "IdempotentParameterMismatch"


def spec_in(s: LaunchSpec, zone: str, **changes: str) -> LaunchSpec:
    return LaunchSpec(
        region=s.region,
        zone=zone,
        image_id=s.image_id,
        client_token=s.client_token,
        tags=s.tags,
        user_data=changes.get("user_data", s.user_data),
    )


async def test_describe_lag_hides_new_resources_for_a_number_of_listings() -> None:
    """What is created while describe lags is missing from the next n listings of its
    kind, then shows; the client token finds it all along."""
    fake = FakeProvider()
    vol = fake.add_volume(REGION, "us-east-1a")
    snap = fake.add_snapshot(REGION, vol.id)
    fake.lag_describes(2)
    new_vol = await fake.create_volume(REGION, "us-east-1a", snap.id, (), client_token="v-1")
    assert new_vol not in {v.id for v in await fake.volumes(REGION)}
    assert (
        await fake.create_volume(REGION, "us-east-1b", snap.id, (), client_token="v-1") == new_vol
    )
    assert new_vol not in {v.id for v in await fake.volumes(REGION)}
    assert new_vol in {v.id for v in await fake.volumes(REGION)}


async def test_copies_of_images_are_idempotent_per_token_and_snapshots_are_not() -> None:
    """CopyImage takes a client token; CopySnapshot does not (EC2 has none for it)."""
    fake = FakeProvider(["us-east-1", "eu-west-1"])
    image = fake.add_image("us-east-1", "app")
    first = await fake.copy_image("eu-west-1", "us-east-1", image.id, "app", "c-1")
    assert await fake.copy_image("eu-west-1", "us-east-1", image.id, "app", "c-1") == first
    assert len(await fake.images("eu-west-1")) == 1
    snap = fake.add_snapshot("us-east-1", None)
    a = await fake.copy_snapshot("eu-west-1", "us-east-1", snap.id, ())
    b = await fake.copy_snapshot("eu-west-1", "us-east-1", snap.id, ())
    assert a != b
