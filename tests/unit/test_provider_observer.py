"""The provider observer: what the API says about a region, its zones and instances."""

from __future__ import annotations

import asyncio
import random

import pytest

from drwatch.config import GroupConfig, ProviderConfig, Selector
from drwatch.errors import ProviderError, ProviderTimeoutError
from drwatch.model.fleet import Fleet, InstanceState, Role
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.discovery import discover
from drwatch.observe.provider import ProviderObserver, judge_zone
from drwatch.providers.base import CloudInstance, ZoneInfo
from drwatch.providers.fake import FakeProvider

US, EU = "us-east-1", "eu-west-1"
GROUPS = [
    GroupConfig(name="app", role=Role.APP_SERVER, select=Selector(tags={"drwatch:group": "app"}))
]
TAGS = (("drwatch:group", "app"),)


async def fleet_of(fake: FakeProvider) -> Fleet:
    result = await discover(fake, ProviderConfig(regions=[US, EU]), GROUPS, now=0.0)
    return result.fleet


def by_target(obs: list[Observation], layer: Layer) -> dict[str, Observation]:
    return {o.target: o for o in obs if o.layer is layer}


def observer(fake: FakeProvider, timeout: float = 1.0) -> ProviderObserver:
    return ProviderObserver(fake, [US, EU], timeout, rng=random.Random(7))


async def test_healthy_region_reports_api_zones_and_instances_up() -> None:
    """An answering API with a running, ok instance gives up everywhere, stamped with now."""
    fake = FakeProvider(regions=(US, EU))
    app = fake.add_instance(US, "us-east-1a", name="app-1", tags=TAGS)
    fake.add_instance(EU, "eu-west-1a", name="app-eu-1", tags=TAGS)
    obs = await observer(fake).poll(US, await fleet_of(fake), now=50.0)
    api = by_target(obs, Layer.API)[US]
    assert (api.health, api.ok_at, api.attempted_at) == (Health.UP, 50.0, 50.0)
    assert api.latency_s is not None
    (inst,) = by_target(obs, Layer.PROVIDER).values()
    assert (inst.target, inst.health) == (app.id, Health.UP)
    assert dict(inst.detail) == {
        "state": "running",
        "system_status": "ok",
        "instance_status": "ok",
        "zone": "us-east-1a",
    }
    zones = by_target(obs, Layer.ZONE)
    assert sorted(zones) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert {z.health for z in zones.values()} == {Health.UP}


async def test_instance_verdicts_follow_state_and_status_checks() -> None:
    """Stopped, terminated and impaired are down with a reason; pending is unknown; an
    instance the provider no longer lists is down 'not found at provider'."""
    fake = FakeProvider(regions=(US, EU))
    ids = {
        name: fake.add_instance(US, "us-east-1a", name=name, tags=TAGS).id
        for name in ("stopped", "terminated", "impaired", "pending", "gone")
    }
    fleet = await fleet_of(fake)
    fake.set_state(ids["stopped"], InstanceState.STOPPED)
    fake.set_state(ids["terminated"], InstanceState.TERMINATED)
    fake.set_state(ids["pending"], InstanceState.PENDING)
    fake.impair(ids["impaired"], system=False)
    fake.forget(ids["gone"])
    got = by_target(await observer(fake).poll(US, fleet, now=1.0), Layer.PROVIDER)
    verdicts = {name: (got[i].health, got[i].reason) for name, i in ids.items()}
    assert verdicts == {
        "stopped": (Health.DOWN, "stopped"),
        "terminated": (Health.DOWN, "terminated"),
        "impaired": (Health.DOWN, "status impaired"),
        "pending": (Health.UNKNOWN, "pending"),
        "gone": (Health.DOWN, "not found at provider"),
    }
    assert got[ids["impaired"]].detail["instance_status"] == "impaired"
    assert got[ids["stopped"]].ok_at is None


async def test_impaired_zone_is_down() -> None:
    """A zone the provider reports impaired is down with the state as reason."""
    fake = FakeProvider(regions=(US, EU))
    fake.set_zone_state("us-east-1b", "impaired")
    zones = by_target(await observer(fake).poll(US, Fleet(), now=1.0), Layer.ZONE)
    assert (zones["us-east-1b"].health, zones["us-east-1b"].reason) == (
        Health.DOWN,
        "zone impaired",
    )
    assert zones["us-east-1a"].health is Health.UP


async def test_unreachable_api_is_down_and_instances_unknown() -> None:
    """A refused connection: the API is down, instances and zones are unknown (not down),
    and each keeps the last time it was seen ok."""
    fake = FakeProvider(regions=(US, EU))
    app = fake.add_instance(US, "us-east-1a", name="app-1", tags=TAGS)
    fleet = await fleet_of(fake)
    obs = observer(fake)
    await obs.poll(US, fleet, now=10.0)
    fake.api_down(US)
    got = await obs.poll(US, fleet, now=20.0)
    api = by_target(got, Layer.API)[US]
    assert (api.health, api.reason, api.ok_at) == (Health.DOWN, "region API unreachable", 10.0)
    inst = by_target(got, Layer.PROVIDER)[app.id]
    assert inst.health is Health.UNKNOWN
    assert inst.reason == "region API unreachable: connection failed"
    assert inst.ok_at == 10.0
    zones = by_target(got, Layer.ZONE)
    assert len(zones) == 3
    assert {z.health for z in zones.values()} == {Health.UNKNOWN}


async def test_timeout_is_unknown_not_down() -> None:
    """A provider timeout makes the API unknown: we did not see it fail."""
    fake = FakeProvider(regions=(US, EU))
    fake.api_fault(US, ProviderTimeoutError("describe_instances: read timeout"))
    api = by_target(await observer(fake).poll(US, Fleet(), now=1.0), Layer.API)[US]
    assert (api.health, api.reason) == (Health.UNKNOWN, "region API timeout")


class _Hanging(FakeProvider):
    async def instances(self, region: str) -> list[CloudInstance]:
        await asyncio.Event().wait()
        return []


async def test_observer_deadline_cuts_a_hanging_call() -> None:
    """A call that never returns is cut at the observer's timeout and reads as unknown."""
    fake = _Hanging(regions=(US, EU))
    api = by_target(await observer(fake, timeout=0.05).poll(US, Fleet(), now=1.0), Layer.API)[US]
    assert (api.health, api.reason) == (Health.UNKNOWN, "region API timeout")


async def test_server_errors_are_unknown_once_then_down() -> None:
    """One 5xx is a blip (unknown); two in a row mean the API is down; an answer resets it."""
    fake = FakeProvider(regions=(US, EU))
    obs = observer(fake)
    fake.api_fault(US, ProviderError("InternalError", code="InternalError", retryable=True))
    first = by_target(await obs.poll(US, Fleet(), now=1.0), Layer.API)[US]
    second = by_target(await obs.poll(US, Fleet(), now=2.0), Layer.API)[US]
    assert (first.health, first.reason) == (Health.UNKNOWN, "region API error: InternalError")
    assert (second.health, second.reason) == (Health.DOWN, "region API unreachable")
    fake.heal()
    assert by_target(await obs.poll(US, Fleet(), now=3.0), Layer.API)[US].health is Health.UP
    fake.api_fault(US, ProviderError("InternalError", code="InternalError", retryable=True))
    again = by_target(await obs.poll(US, Fleet(), now=4.0), Layer.API)[US]
    assert again.health is Health.UNKNOWN


async def test_client_errors_are_unknown() -> None:
    """An auth failure says nothing about the region: unknown with the code."""
    fake = FakeProvider(regions=(US, EU))
    fake.api_fault(US, ProviderError("AuthFailure", code="AuthFailure"))
    obs = observer(fake)
    for t in (1.0, 2.0):
        api = by_target(await obs.poll(US, Fleet(), now=t), Layer.API)[US]
        assert (api.health, api.reason) == (Health.UNKNOWN, "region API error: AuthFailure")


async def test_throttling_backs_off_and_recovers() -> None:
    """Throttled polls are unknown 'throttled' and push the next poll out, further each
    time; an answered poll clears the backoff."""
    fake = FakeProvider(regions=(US, EU))
    app = fake.add_instance(US, "us-east-1a", name="app-1", tags=TAGS)
    fleet = await fleet_of(fake)
    obs = observer(fake)
    assert obs.next_poll_delay(US) == 0.0
    fake.throttle(US, 3)
    delays = []
    for t in (1.0, 2.0, 3.0):
        got = await obs.poll(US, fleet, now=t)
        assert by_target(got, Layer.PROVIDER)[app.id].reason == "throttled"
        assert by_target(got, Layer.API)[US].health is Health.UNKNOWN
        delays.append(obs.next_poll_delay(US))
    assert 0 < delays[0] < delays[2]
    assert obs.next_poll_delay(EU) == 0.0
    await obs.poll(US, fleet, now=4.0)
    assert obs.next_poll_delay(US) == 0.0


class _Broken(FakeProvider):
    async def zones(self, region: str) -> list[ZoneInfo]:
        raise KeyError("bug")


async def test_unexpected_error_never_escapes() -> None:
    """A bug below the observer becomes unknown observations, not an exception."""
    api = by_target(await observer(_Broken(regions=(US, EU))).poll(US, Fleet(), 1.0), Layer.API)
    assert (api[US].health, api[US].reason) == (Health.UNKNOWN, "observer error: KeyError")


async def test_poll_all_covers_every_region_independently() -> None:
    """Polling all regions reports each on its own: one region down leaves the other up."""
    fake = FakeProvider(regions=(US, EU))
    fake.add_instance(EU, "eu-west-1a", name="app-eu-1", tags=TAGS)
    fleet = await fleet_of(fake)
    fake.api_down(US)
    api = by_target(await observer(fake).poll_all(fleet, now=1.0), Layer.API)
    assert (api[US].health, api[EU].health) == (Health.DOWN, Health.UP)


@pytest.mark.parametrize(
    ("state", "health"),
    [
        ("available", Health.UP),
        ("information", Health.UP),
        ("constrained", Health.UP),
        ("impaired", Health.DOWN),
        ("unavailable", Health.DOWN),
        ("something-new", Health.UNKNOWN),
    ],
)
def test_zone_states(state: str, health: Health) -> None:
    """Zone states map to health; a state drwatch does not know is unknown, not up."""
    assert judge_zone(state)[0] is health
