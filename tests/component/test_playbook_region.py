"""region.failover against the in-memory provider and DNS: the move, its refusals, Route 53
failing mid-change, and a crash at every point (promoted once, switched once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from drwatch.act.base import (
    GROUP_TAG,
    ROLE_TAG,
    Deps,
    GroupInfo,
    RegionSetup,
)
from drwatch.act.testing import (
    FAST_SETTINGS,
    TEST_GROUPS,
    SimulatedHosts,
    World,
    crash_at_every_point,
    run_plan,
    seed_world,
)
from drwatch.errors import ProviderError, ProviderThrottledError
from drwatch.model.fleet import Fleet, Instance, InstanceState, Role
from drwatch.model.observation import Layer, TargetHealth
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress, StepStatus
from drwatch.model.regions import DnsRecord, failover_pair
from drwatch.model.snapshot import HealthKey, Snapshot
from drwatch.providers.base import CloudInstance, VolumeInfo
from drwatch.providers.fake import FakeProvider
from drwatch.providers.fake_dns import LOST_ANSWER, FakeDns
from drwatch.roles import RoleMemory

LOST, STANDBY = "us-east-1", "eu-west-1"
ZONE, NAME = "example.test.", "www.example.test."
GROUPS: Mapping[str, GroupInfo] = MappingProxyType(
    {
        **TEST_GROUPS,
        "app-eu": GroupInfo("app-eu", Role.APP_SERVER, size=1, app_port=8080),
        "lb-eu": GroupInfo("lb-eu", Role.LOAD_BALANCER, size=1),
        "db-eu": GroupInfo("db-eu", Role.DATABASE, size=1, has_app_checks=False),
    }
)


@dataclass
class RegionHosts(SimulatedHosts):
    """The simulated hosts across two regions: a region whose API is down keeps the
    instances last seen there; the replica reports its lag; the service answers where
    the DNS PRIMARY record points."""

    dns: FakeDns = field(default_factory=FakeDns)
    lag: dict[str, float] = field(default_factory=dict)
    _seen: dict[str, list[CloudInstance]] = field(default_factory=dict)

    async def refresh(self) -> Snapshot:
        cloud: list[CloudInstance] = []
        volumes: list[VolumeInfo] = []
        for region in self.regions:
            try:
                self._seen[region] = await self.provider.instances(region)
                volumes += await self.provider.volumes(region)
            except ProviderError:
                pass
            cloud += self._seen.get(region, [])
        fleet = Fleet(tuple(_instance(c) for c in cloud if c.tag(ROLE_TAG)), self.now)
        health: dict[HealthKey, TargetHealth] = {}
        for inst in fleet:
            self._host_health(inst, volumes, health)
        health[("web-lb", Layer.SERVICE)] = self._th("web-lb", Layer.SERVICE, self._serves(fleet))
        self.now += 1.0
        self._latest = Snapshot(self.now, fleet, MappingProxyType(health))
        return self._latest

    def _serves(self, fleet: Fleet) -> bool:
        primary, _ = failover_pair(self.dns.zones.get(ZONE, []))
        if primary is None:
            return False
        lb = next((i for i in fleet if i.public_ip in primary.values), None)
        return lb is not None and lb.state is InstanceState.RUNNING and lb.id not in self.down

    def _facts(self, inst: Instance, volumes: list[VolumeInfo]) -> dict[str, Any]:
        facts = super()._facts(inst, volumes)
        if inst.id in self.lag:
            facts["checks"]["database"]["data"]["lag_s"] = self.lag[inst.id]
        return facts


def _instance(c: CloudInstance) -> Instance:
    return Instance(
        id=c.id,
        name=c.tag("Name") or c.id,
        region=c.region,
        zone=c.zone,
        role=Role(c.tag(ROLE_TAG) or "app_server"),
        group=c.tag(GROUP_TAG) or "",
        state=c.state,
        private_ip=c.private_ip,
        public_ip=c.public_ip,
        tags=c.tags,
    )


@dataclass
class Remembered:
    """The roles the daemon remembers from before the loss (its incident store)."""

    roles: dict[str, str]

    def db_roles(self) -> dict[str, str]:
        return dict(self.roles)

    def remember_db_roles(self, roles: Mapping[str, str]) -> None:
        self.roles.update(roles)


@dataclass
class RegionWorld:
    world: World
    hosts: RegionHosts
    dns: FakeDns
    deps: Deps

    def id(self, name: str) -> str:
        return self.world.id(name)

    def primary_points_at(self) -> tuple[str, ...]:
        primary, _ = failover_pair(self.dns.zones[ZONE])
        assert primary is not None
        return primary.values

    async def eu(self) -> list[CloudInstance]:
        return await self.world.provider.instances(STANDBY)


def region_world(*, lose: str = LOST, api_down: bool = True) -> RegionWorld:
    """The default topology in two regions; `lose` is lost (API down, hosts silent)."""
    provider = FakeProvider([LOST, STANDBY])
    world = seed_world(provider)
    us_ip = provider.add_address(LOST, instance_id=world.id("lb-1")).public_ip
    for role in Role:
        provider.add_image(STANDBY, f"drwatch-{role.value}", tags=((ROLE_TAG, role.value),))
    for name, group, role in (
        ("db-3", "db-eu", Role.DATABASE),
        ("app-eu-1", "app-eu", Role.APP_SERVER),
        ("lb-eu-1", "lb-eu", Role.LOAD_BALANCER),
    ):
        tags = ((GROUP_TAG, group), (ROLE_TAG, role.value))
        world.ids[name] = provider.add_instance(STANDBY, STANDBY + "a", name=name, tags=tags).id
    eu_ip = provider.add_address(STANDBY, instance_id=world.id("lb-eu-1")).public_ip
    dns = FakeDns(
        zones={
            ZONE: [
                DnsRecord(NAME, "A", (us_ip,), failover="PRIMARY", set_id="primary", ttl=60),
                DnsRecord(NAME, "A", (eu_ip,), failover="SECONDARY", set_id="secondary", ttl=60),
                DnsRecord(NAME, "TXT", ('"v=1"',)),
            ]
        }
    )
    hosts = RegionHosts(provider, regions=(LOST, STANDBY), groups=GROUPS, dns=dns)
    hosts.roles.update(world.hosts.roles)
    hosts.roles[world.id("db-3")] = "replica"
    hosts.lag[world.id("db-3")] = 0.4
    hosts.backends.update(world.hosts.backends)
    hosts.backends[world.id("lb-eu-1")] = {"app-eu-1"}
    world.hosts = hosts
    setup = RegionSetup(dns=dns, hosted_zone=ZONE, public_name=NAME, service_group="web-lb")
    remembered = Remembered({world.id("db-1"): "primary", world.id("db-2"): "replica"})
    deps = Deps(
        provider, hosts, hosts, GROUPS, FAST_SETTINGS, roles=RoleMemory(remembered), region=setup
    )
    return RegionWorld(world, hosts, dns, deps)


def _region_of(provider: FakeProvider, instance_id: str) -> str:
    return "eu-west-1" if provider._find_instance(instance_id).region == STANDBY else LOST


def lose_hosts(rw: RegionWorld, region: str = LOST) -> None:
    """Silence the region's hosts (their roles stay remembered, as the daemon's are)."""
    ids = [i for i in rw.world.ids.values() if _region_of(rw.world.provider, i) == region]
    rw.hosts.down.update(ids)


async def lose_api(rw: RegionWorld, region: str = LOST) -> None:
    """The whole region: its hosts silent, then its API down."""
    await rw.hosts.refresh()
    lose_hosts(rw, region)
    rw.world.provider.api_down(region)


def plan(rw: RegionWorld, region: str = LOST) -> Plan:
    targets = tuple(
        i for n, i in rw.world.ids.items() if _region_of(rw.world.provider, i) == region
    )
    return Plan(
        incident_id="inc-region",
        playbook=PlaybookName.REGION_FAILOVER,
        region=region,
        zone="",
        group="",
        targets=targets,
    )


def statuses(progress: RunProgress) -> dict[str, tuple[StepStatus, str]]:
    return {s.name: (s.status, s.detail) for s in progress.steps}


async def failover(tmp_path: Path, rw: RegionWorld, region: str = LOST) -> RunProgress:
    progress = await run_plan(tmp_path / "j.db", rw.deps, plan(rw, region), owner="w1")
    assert progress is not None
    return progress


async def test_the_service_moves_to_the_standby_region(tmp_path: Path) -> None:
    """us-east-1 lost: db-3 promoted, eu-west-1's app servers brought to the app group's
    size (6) told db-3, registered with lb-eu-1, the public name's PRIMARY (and SECONDARY)
    switched to lb-eu-1's address, the service answers through it."""
    rw = region_world()
    await lose_api(rw)
    progress = await failover(tmp_path, rw)
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    steps = statuses(progress)
    assert "expected data loss about 0.4s" in steps["preconditions"][1]
    assert steps["fence_lost_region"][0] is StepStatus.SKIPPED
    assert "does not answer" in steps["fence_lost_region"][1]
    assert rw.hosts.roles[rw.id("db-3")] == "primary"
    assert rw.hosts.count("promote") == 1
    lb_ip = next(i.public_ip for i in await rw.eu() if i.id == rw.id("lb-eu-1"))
    assert rw.primary_points_at() == (lb_ip,)
    _, secondary = failover_pair(rw.dns.zones[ZONE])
    assert secondary is not None
    assert secondary.values == (lb_ip,)
    apps = [i for i in await rw.eu() if i.tag(ROLE_TAG) == "app_server"]
    assert len(apps) == 6
    new = [a.id for a in apps if a.id != rw.id("app-eu-1")]
    assert all(dict(a.tags).get(GROUP_TAG) == "app-eu" for a in apps)
    assert {f"{a.private_ip}:8080" for a in apps} <= rw.hosts.backends[rw.id("lb-eu-1")]
    assert rw.hosts.databases[rw.id("app-eu-1")] == "db-3"
    assert len(new) == 5
    assert len(rw.dns.applied) == 1
    scaled = ", ".join(f"app-eu-fo-{n}" for n in range(2, 7))
    assert steps["scale_app_servers"][1] == (
        f"app-eu: running app-eu-1 (told the new primary); launched {scaled}"
    )


async def test_the_old_primary_is_fenced_when_the_lost_regions_api_answers(
    tmp_path: Path,
) -> None:
    """The instances are lost but the API answers: db-1 is stopped before db-3 is
    promoted, so it cannot take writes when it comes back."""
    rw = region_world()
    await rw.hosts.refresh()
    lose_hosts(rw)
    progress = await failover(tmp_path, rw)
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    db1 = next(i for i in await rw.world.provider.instances(LOST) if i.id == rw.id("db-1"))
    assert db1.state is InstanceState.STOPPED
    assert statuses(progress)["fence_lost_region"][1] == f"db-1 ({rw.id('db-1')}) stopped"


async def test_a_standby_load_balancer_that_is_down_is_replaced(tmp_path: Path) -> None:
    """lb-eu-1 answers nothing: a new load balancer is launched in eu-west-1 from the
    image there, with the standby's app servers as backends; it takes lb-eu-1's Elastic
    IP, and DNS points at it."""
    rw = region_world()
    rw.hosts.down.add(rw.id("lb-eu-1"))
    region = rw.world.provider._region(STANDBY)
    await lose_api(rw)
    progress = await failover(tmp_path, rw)
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    assert statuses(progress)["ensure_load_balancer"][1].startswith("launched lb-eu-fo")
    lbs = [i for i in await rw.eu() if i.tag(ROLE_TAG) == "load_balancer"]
    new = next(i for i in lbs if i.id != rw.id("lb-eu-1"))
    eip = next(iter(region.addresses.values()))
    assert eip.instance_id == new.id
    assert rw.primary_points_at() == (eip.public_ip,)


async def _refused(tmp_path: Path, rw: RegionWorld, region: str = LOST) -> str:
    progress = await failover(tmp_path, rw, region)
    assert progress.outcome is RunOutcome.FAILED
    status, detail = statuses(progress)["preconditions"]
    assert status is StepStatus.FAILED
    # Nothing was changed: no promotion, no launch, no DNS change.
    assert rw.hosts.count("promote") == 0
    assert rw.dns.attempts == 0
    assert rw.world.provider.count("run_instance") == 0
    return detail


async def test_a_standby_replica_that_is_down_refuses_the_failover(tmp_path: Path) -> None:
    rw = region_world()
    rw.hosts.down.add(rw.id("db-3"))
    await lose_api(rw)
    detail = await _refused(tmp_path, rw)
    assert "replica db-3 in eu-west-1 is not reachable" in detail


async def test_an_unknown_lag_a_missing_image_and_residency_are_each_a_reason(
    tmp_path: Path,
) -> None:
    rw = region_world()
    del rw.hosts.lag[rw.id("db-3")]
    region = rw.world.provider._region(STANDBY)
    region.images = {k: v for k, v in region.images.items() if "load_balancer" not in v.name}

    def residency(_from: str, to: str) -> str:
        return f"residency: orders may live only in us-east-1 (not {to})"

    rw.deps = replace(rw.deps, region=replace(rw.deps.region, residency=residency))
    await lose_api(rw)
    detail = await _refused(tmp_path, rw)
    assert "its replication lag is unknown" in detail
    assert "no load_balancer image in eu-west-1" in detail
    assert "residency: orders may live only in us-east-1" in detail


async def test_losing_the_standby_region_is_not_a_failover(tmp_path: Path) -> None:
    """eu-west-1 holds neither the PRIMARY record nor the primary: refused, nothing moves."""
    rw = region_world(lose=STANDBY)
    await lose_api(rw, STANDBY)
    detail = await _refused(tmp_path, rw, STANDBY)
    assert "eu-west-1 is not the serving region" in detail


async def test_a_hosted_zone_that_does_not_exist_refuses(tmp_path: Path) -> None:
    rw = region_world()
    rw.deps = replace(rw.deps, region=replace(rw.deps.region, hosted_zone="nope.test."))
    await lose_api(rw)
    detail = await _refused(tmp_path, rw)
    assert "NoSuchHostedZone" in detail or "no hosted zone named nope.test." in detail


async def test_records_drwatch_does_not_manage_refuse(tmp_path: Path) -> None:
    """Weighted records instead of failover ones: refused, with the record's kind named."""
    rw = region_world()
    rw.dns.zones[ZONE] = [
        DnsRecord(NAME, "A", ("198.51.100.9",), set_id="a", weight=50),
        DnsRecord(NAME, "A", ("198.51.100.8",), set_id="b", weight=50),
    ]
    await lose_api(rw)
    detail = await _refused(tmp_path, rw)
    assert "no PRIMARY and SECONDARY failover records" in detail
    assert "weighted" in detail


async def test_route53_throttling_and_a_lost_answer_still_switch_once(tmp_path: Path) -> None:
    """Throttled twice, then the change applies but its answer is lost (a 5xx): the
    records are read back, found switched, and not changed again."""
    rw = region_world()
    rw.dns.fail_next = [
        ProviderThrottledError("throttled"),
        ProviderThrottledError("throttled"),
        ProviderError("internal", code=LOST_ANSWER, retryable=True),
    ]
    await lose_api(rw)
    progress = await failover(tmp_path, rw)
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    assert rw.dns.attempts == 3
    assert len(rw.dns.applied) == 1


async def test_a_refused_change_leaves_the_records_as_they_were(tmp_path: Path) -> None:
    """Route 53 refuses the batch: the step fails saying so, PRIMARY still names us-east-1."""
    rw = region_world()
    before = rw.primary_points_at()
    rw.dns.fail_next = [ProviderError("bad batch", code="InvalidChangeBatch")]
    await lose_api(rw)
    progress = await failover(tmp_path, rw)
    assert progress.outcome is RunOutcome.FAILED
    status, detail = statuses(progress)["switch_dns"]
    assert status is StepStatus.FAILED
    assert "Route 53 refused the change" in detail
    assert rw.primary_points_at() == before
    assert rw.dns.applied == []


async def test_a_crash_at_every_point_promotes_once_and_switches_once(tmp_path: Path) -> None:
    """kill -9 anywhere: the resumed run finishes with one promotion, five launches, one
    DNS change, and the PRIMARY record on the standby (never flipped back)."""
    state: dict[str, RegionWorld] = {}

    def setup() -> tuple[World, Deps, Plan]:
        rw = region_world()
        lose_hosts(rw)  # the API answers: db-1 is fenced, one more effect to crash at
        state["rw"] = rw
        return rw.world, rw.deps, plan(rw)

    async def verify(_world: World, point: str) -> None:
        rw = state["rw"]
        assert rw.hosts.count("promote") == 1, point
        assert len(rw.dns.applied) == 1, point
        apps = [i for i in await rw.eu() if i.tag(ROLE_TAG) == "app_server"]
        assert len(apps) == 6, point
        lb_ip = next(i.public_ip for i in await rw.eu() if i.id == rw.id("lb-eu-1"))
        assert rw.primary_points_at() == (lb_ip,), point

    points = await crash_at_every_point(tmp_path, setup, verify)
    assert any(p.startswith("promote_replica/") for p in points)
    assert any(p.startswith("switch_dns/switch") for p in points)
