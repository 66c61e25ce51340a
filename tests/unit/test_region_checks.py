"""region.failover's preconditions as pure checks: tables of what was read and the
refusal (or the choice) each gives."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from drwatch.act.base import ROLE_TAG, GroupInfo
from drwatch.act.playbooks.region_checks import (
    app_groups,
    records_refusal,
    replica_lag,
    replica_to_promote,
    role_images,
    serving_refusals,
)
from drwatch.model.fleet import Fleet, Instance, InstanceState, Role
from drwatch.model.observation import Health, Layer, TargetHealth
from drwatch.model.regions import DnsRecord, RegionRoles
from drwatch.model.snapshot import HealthKey, Snapshot
from drwatch.providers.base import ImageInfo

US, EU = "us-east-1", "eu-west-1"
NAME, ZONE = "www.example.test.", "example.test."


def db(name: str, *, region: str = EU, state: InstanceState = InstanceState.RUNNING) -> Instance:
    return Instance(f"i-{name}", name, region, f"{region}a", Role.DATABASE, "db-eu", state)


def agent(
    instance: Instance, data: dict[str, Any], *, up: bool = True
) -> tuple[HealthKey, TargetHealth]:
    """The agent's health for `instance`, its database check reporting `data`."""
    check = {"kind": "database", "status": "ok", "data": data}
    health = Health.UP if up else Health.DOWN
    return (instance.id, Layer.AGENT), TargetHealth(
        target=instance.id,
        layer=Layer.AGENT,
        health=health,
        since=0.0,
        attempted_at=0.0,
        ok_at=0.0 if up else None,
        last=health,
        detail=MappingProxyType({"checks": {"database": check}}),
    )


def snapshot(*instances: Instance, health: dict[HealthKey, TargetHealth] | None = None) -> Snapshot:
    return Snapshot(0.0, Fleet(instances), MappingProxyType(health or {}))


REPLICA = {"role": "replica", "integrity": "ok", "lag_s": 1.5}


@pytest.mark.parametrize(
    ("agent_up", "data", "reason"),
    [
        (False, REPLICA, "replica db-3 in eu-west-1 is not reachable (agent down)"),
        (True, {**REPLICA, "integrity": "corrupt"}, "replica db-3 reports its data corrupt"),
        (True, {**REPLICA, "role": "primary"}, "db-3 reports role primary"),
        (True, {"integrity": "ok", "lag_s": 1.0}, "db-3 reports role unknown"),
        (True, {"role": "replica", "integrity": "ok"}, "replica db-3: its replication lag is "
         "unknown"),
        (True, {**REPLICA, "lag_s": "soon"}, "replica db-3: its replication lag is unknown"),
    ],
)  # fmt: skip
def test_a_replica_that_cannot_be_promoted_says_why(
    agent_up: bool, data: dict[str, Any], reason: str
) -> None:
    """Each way a standby replica falls short is its own refusal, and nothing is chosen."""
    replica = db("db-3")
    snap = snapshot(replica, health=dict([agent(replica, data, up=agent_up)]))
    assert replica_to_promote(snap, EU) == (None, [reason])


def test_the_first_promotable_replica_by_name_is_chosen() -> None:
    """db-3 is corrupt, db-4 fine: db-4, and no refusal (db-3's is dropped)."""
    bad, good = db("db-3"), db("db-4")
    health = dict([agent(bad, {**REPLICA, "integrity": "corrupt"}), agent(good, REPLICA)])
    assert replica_to_promote(snapshot(good, bad, health=health), EU) == (good, [])
    assert replica_lag(snapshot(good, bad, health=health), good.id) == 1.5


@pytest.mark.parametrize(
    "instances",
    [
        (),
        (db("db-1", region=US),),  # the lost region's own database does not count
        (db("db-3", state=InstanceState.TERMINATED),),
    ],
)
def test_no_replica_in_the_standby_region_is_a_refusal(instances: tuple[Instance, ...]) -> None:
    assert replica_to_promote(snapshot(*instances), EU) == (
        None,
        ["no database replica in eu-west-1"],
    )


def image(role: str) -> ImageInfo:
    return ImageInfo(f"ami-{role}", EU, f"drwatch-{role}", ((ROLE_TAG, role),))


@pytest.mark.parametrize(
    ("roles", "refusals"),
    [
        (("load_balancer", "app_server", "database"), []),
        (("app_server", "database"), ["no load_balancer image in eu-west-1"]),
        ((), [f"no {r} image in eu-west-1" for r in ("load_balancer", "app_server", "database")]),
    ],
)
def test_every_role_needs_an_image_in_the_standby_region(
    roles: tuple[str, ...], refusals: list[str]
) -> None:
    found, missing = role_images([image(r) for r in roles], EU)
    assert found == {r: f"ami-{r}" for r in roles}
    assert missing == refusals


def record(failover: str, **kw: Any) -> DnsRecord:
    return DnsRecord(NAME, "A", ("192.0.2.1",), failover=failover, set_id=failover, **kw)


@pytest.mark.parametrize(
    ("records", "refusal"),
    [
        ([record("PRIMARY"), record("SECONDARY")], None),
        ([record("PRIMARY")], f"{NAME} in {ZONE} has no PRIMARY and SECONDARY failover "
         "records drwatch can switch"),
        ([DnsRecord(NAME, "A", ("192.0.2.1",))], f"{NAME} in {ZONE} has no PRIMARY and "
         f"SECONDARY failover records drwatch can switch (A {NAME} is a simple record (only "
         "failover records))"),
        ([], f"{NAME} in {ZONE} has no PRIMARY and SECONDARY failover records drwatch can "
         "switch"),
    ],
)  # fmt: skip
def test_only_a_failover_pair_can_be_switched(
    records: list[DnsRecord], refusal: str | None
) -> None:
    assert records_refusal(records, ZONE, NAME) == refusal


@pytest.mark.parametrize(
    ("roles", "standby", "reasons"),
    [
        (RegionRoles((US, EU), serving=US, standby=EU), EU, []),
        (RegionRoles((US, EU), dns_region=US), EU, []),  # no standby named: the other one
        (RegionRoles((US, EU), database_regions=(US,)), EU, []),
        (
            RegionRoles((US, EU), serving=EU, standby=US, detail="dns and database: eu-west-1"),
            EU,
            ["us-east-1 is not the serving region (dns and database: eu-west-1): losing it "
             "is lost DR capacity, not a failover"],
        ),
    ],
)  # fmt: skip
def test_only_the_serving_region_fails_over(
    roles: RegionRoles, standby: str, reasons: list[str]
) -> None:
    assert serving_refusals(roles, US, [US, EU]) == (standby, reasons)


def test_a_single_region_has_nowhere_to_go() -> None:
    roles = RegionRoles((US,), serving=US)
    assert serving_refusals(roles, US, [US]) == (None, ["no standby region"])


def test_app_groups_take_the_configured_size_else_how_many_there_were() -> None:
    """Group app is configured at 6; group api is not, and had 2: the standby's app
    group (app-eu) takes both."""

    def app(name: str, group: str, region: str = US) -> Instance:
        return Instance(f"i-{name}", name, region, f"{region}a", Role.APP_SERVER, group)

    snap = snapshot(app("app-1", "app"), app("api-1", "api"), app("api-2", "api"),
                    app("app-eu-1", "app-eu", EU))  # fmt: skip
    groups = {"app": GroupInfo("app", Role.APP_SERVER, size=6)}
    assert app_groups(groups, snap, US, EU) == {
        "app": {"size": 6, "standby_group": "app-eu"},
        "api": {"size": 2, "standby_group": "app-eu"},
    }
    assert app_groups(groups, snapshot(app("app-1", "app")), US, EU) == {
        "app": {"size": 6, "standby_group": "app"}
    }
