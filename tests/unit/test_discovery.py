"""Discovery turns the provider's instances into the watched Fleet, group by group."""

from __future__ import annotations

import asyncio

from drwatch.config import GroupConfig, ProviderConfig, Selector
from drwatch.errors import ProviderTimeoutError
from drwatch.model.fleet import InstanceState, Role
from drwatch.observe.discovery import discover
from drwatch.providers.base import CloudInstance
from drwatch.providers.fake import FakeProvider

US, EU = "us-east-1", "eu-west-1"
PROVIDER = ProviderConfig(regions=[US, EU])
APP = GroupConfig(name="app", role=Role.APP_SERVER, select=Selector(tags={"drwatch:group": "app"}))
DB = GroupConfig(
    name="db",
    role=Role.DATABASE,
    select=Selector(tags={"drwatch:group": "db", "env": "prod"}),
)
GROUPS = [APP, DB]


def seeded() -> FakeProvider:
    fake = FakeProvider(regions=(US, EU))
    fake.add_instance(US, "us-east-1a", name="app-1", tags=(("drwatch:group", "app"),))
    fake.add_instance(EU, "eu-west-1a", name="app-eu-1", tags=(("drwatch:group", "app"),))
    fake.add_instance(
        US, "us-east-1b", name="db-1", tags=(("drwatch:group", "db"), ("env", "prod"))
    )
    return fake


async def test_instances_join_their_group_across_regions() -> None:
    """Each instance gets the role and group of the group whose tags it carries, in any region."""
    result = await discover(seeded(), PROVIDER, GROUPS, now=100.0)
    fleet = result.fleet
    assert result.ok
    assert fleet.discovered_at == 100.0
    assert sorted((i.name, i.region, i.group, i.role) for i in fleet) == [
        ("app-1", US, "app", Role.APP_SERVER),
        ("app-eu-1", EU, "app", Role.APP_SERVER),
        ("db-1", US, "db", Role.DATABASE),
    ]
    (db,) = fleet.by_name("db-1")
    assert (db.zone, db.state) == ("us-east-1b", InstanceState.RUNNING)
    assert db.private_ip is not None


async def test_every_selector_tag_must_match() -> None:
    """A database missing one of the selector's tags is not watched."""
    fake = FakeProvider(regions=(US, EU))
    fake.add_instance(US, "us-east-1a", name="db-9", tags=(("drwatch:group", "db"),))
    fake.add_instance(US, "us-east-1a", name="stray")
    result = await discover(fake, PROVIDER, GROUPS, now=1.0)
    assert len(result.fleet) == 0


async def test_instance_ids_select_and_first_group_wins() -> None:
    """An id listed in a selector joins that group; an instance matching two groups joins the
    first in config order, and the conflict is reported."""
    fake = FakeProvider(regions=(US, EU))
    odd = fake.add_instance(US, "us-east-1c", tags=(("drwatch:group", "app"),))
    lb = GroupConfig(name="lb", role=Role.LOAD_BALANCER, select=Selector(instance_ids=[odd.id]))
    result = await discover(fake, PROVIDER, [lb, APP], now=1.0)
    (inst,) = result.fleet
    assert (inst.group, inst.role, inst.name) == ("lb", Role.LOAD_BALANCER, odd.id)
    assert result.conflicts == {odd.id: ("lb", "app")}


async def test_failed_region_keeps_previous_instances() -> None:
    """A region whose API fails keeps last time's instances, so nothing 'leaves' on a blip;
    the other region is listed afresh."""
    fake = seeded()
    first = await discover(fake, PROVIDER, GROUPS, now=1.0)
    fake.add_instance(EU, "eu-west-1b", name="app-eu-2", tags=(("drwatch:group", "app"),))
    fake.api_down(US)
    second = await discover(fake, PROVIDER, GROUPS, now=2.0, previous=first.fleet)
    assert set(second.errors) == {US}
    assert "Unreachable" in second.errors[US]
    assert {i.name for i in second.fleet.in_region(US)} == {"app-1", "db-1"}
    assert {i.name for i in second.fleet.in_region(EU)} == {"app-eu-1", "app-eu-2"}


async def test_failed_region_without_previous_fleet_is_empty_and_named() -> None:
    """With no earlier fleet, a failing region contributes nothing but its error."""
    fake = seeded()
    fake.api_fault(EU, ProviderTimeoutError("slow"))
    result = await discover(fake, PROVIDER, GROUPS, now=1.0)
    assert set(result.errors) == {EU}
    assert result.fleet.regions == (US,)


async def test_stopped_stays_terminated_stays_while_listed() -> None:
    """A stopped instance is an outage and stays; a terminated one stays while the provider
    lists it, then leaves."""
    fake = seeded()
    (app,) = [i for i in await fake.instances(US) if i.tag("Name") == "app-1"]
    (db,) = [i for i in await fake.instances(US) if i.tag("Name") == "db-1"]
    await fake.stop_instance(US, app.id)
    await fake.terminate_instance(US, db.id)
    result = await discover(fake, PROVIDER, GROUPS, now=1.0)
    states = {i.name: i.state for i in result.fleet.in_region(US)}
    assert states == {"app-1": InstanceState.STOPPED, "db-1": InstanceState.TERMINATED}
    fake.forget(db.id)
    result = await discover(fake, PROVIDER, GROUPS, now=2.0, previous=result.fleet)
    assert [i.name for i in result.fleet.in_region(US)] == ["app-1"]


async def test_instance_fields_come_from_the_provider() -> None:
    """Addresses, volumes, image, tags and launch time are carried into the model."""
    fake = FakeProvider(regions=(US,))
    image = fake.add_image(US, "db")
    inst = fake.add_instance(
        US, "us-east-1a", name="db-1", tags=(("drwatch:group", "db"), ("env", "prod"))
    )
    vol = fake.add_volume(US, "us-east-1a", attached_to=inst.id)
    eip = fake.add_address(US, instance_id=inst.id)
    fake.set_state(inst.id, InstanceState.RUNNING)
    result = await discover(fake, ProviderConfig(regions=[US]), GROUPS, now=1.0)
    (got,) = result.fleet
    assert got.volumes == (vol.id,)
    assert got.public_ip == eip.public_ip
    assert got.tag("env") == "prod"
    assert got.launched_at is not None
    assert image.id.startswith("ami-")


class _Hanging(FakeProvider):
    """A provider whose listing in one region never answers."""

    async def instances(self, region: str) -> list[CloudInstance]:
        if region == EU:
            await asyncio.Event().wait()
        return await super().instances(region)


async def test_hanging_region_times_out_and_others_still_count() -> None:
    """A region that never answers is cut off at the deadline and reported as an error."""
    fake = _Hanging(regions=(US, EU))
    fake.add_instance(US, "us-east-1a", name="app-1", tags=(("drwatch:group", "app"),))
    result = await discover(fake, PROVIDER, GROUPS, now=1.0, region_deadline=0.05)
    assert result.errors == {EU: "no answer within 0.05s"}
    assert [i.name for i in result.fleet] == ["app-1"]
