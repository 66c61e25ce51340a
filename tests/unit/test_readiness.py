"""Readiness rules, as a table: the default topology, one gap, and the warnings it makes.

Each row: a world, the images seen per region, the residency rules, and the readiness
findings expected, written `finding key [target names]` (exactly these, no others).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from drwatch.assess.readiness import (
    READINESS_RULES,
    ImageRef,
    ReadinessConfig,
    ReadinessInput,
    ReadinessReport,
    assess_readiness,
    regional_fallback,
    residency_refusal,
)
from drwatch.assess.regions import serving_regions
from drwatch.config import parse
from drwatch.model import Health, Layer
from drwatch.model.findings import READINESS_FINDINGS, Diagnosis, Severity
from drwatch.model.regions import DnsRecord, RegionRoles
from drwatch.web.readiness import ReadinessState, extend_status
from tests.scenarios.world import NOW, RULES, World

ROLES = ("load_balancer", "app_server", "database")


def images(*roles: str) -> tuple[ImageRef, ...]:
    return tuple(ImageRef(f"ami-{r}", MappingProxyType({"drwatch:role": r})) for r in roles)


BOTH = MappingProxyType({"us-east-1": images(*ROLES), "eu-west-1": images(*ROLES)})


def pg(role: str, status: str = "ok", **data: object) -> dict[str, object]:
    check = {"kind": "postgres", "status": status, "data": {"role": role, **data}}
    return {"checks": {"pg": check}}


@dataclass(frozen=True)
class Case:
    id: str
    world: Callable[[], World]
    expected: frozenset[str]
    images: Mapping[str, tuple[ImageRef, ...]] = field(default_factory=lambda: BOTH)
    residency: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    records: tuple[DnsRecord, ...] = ()


# The public name's failover records, by the address each carries.
ADDRS = {"198.51.100.1": "us-east-1", "203.0.113.9": "eu-west-1"}
NAME = "www.example.test."


def dns(
    primary: str = "198.51.100.1", secondary: str | None = "203.0.113.9"
) -> tuple[DnsRecord, ...]:
    records = [DnsRecord(NAME, "A", (primary,), failover="PRIMARY", set_id="primary")]
    if secondary is not None:
        records.append(DnsRecord(NAME, "A", (secondary,), failover="SECONDARY", set_id="secondary"))
    return tuple(records)


def case(
    cid: str,
    world: Callable[[], World],
    *expected: str,
    imgs: Mapping[str, tuple[ImageRef, ...]] = BOTH,
    residency: Mapping[str, tuple[str, ...]] | None = None,
    records: tuple[DnsRecord, ...] = (),
) -> Case:
    return Case(cid, world, frozenset(expected), imgs, residency or {}, records)


def h() -> World:
    return World.healthy()


def _failed_over() -> World:
    return h().db_role("db-1", "replica").db_role("db-3", "primary")


CASES = [
    case("healthy: ready for a zone and a region loss", h),
    case("the standby region's load balancer stopped", lambda: h().stop("lb-eu-1"),
         "lb_standby_missing region:eu-west-1 [lb-eu-1]"),
    case("the standby region's load balancer not heard from yet: unknown, nothing said",
         lambda: h().dark("lb-eu-1", health=Health.UNKNOWN).layer(
             "lb-eu-1", Layer.PROVIDER, Health.UNKNOWN, detail={})),
    case("the standby region's load balancer replaced, its replacement still booting",
         lambda: h().launched("lb-eu-1", NOW - 10).dark("lb-eu-1", health=Health.UNKNOWN),
         "lb_standby_missing region:eu-west-1 [lb-eu-1]"),
    case("the serving region's standby load balancer stopped", lambda: h().stop("lb-2"),
         "lb_standby_missing region:us-east-1 [lb-2]"),
    case("the active load balancer dark, the standby fine: only one zone left",
         lambda: h().dark("lb-1"), "lb_standby_missing region:us-east-1 [lb-1]"),
    case("what is left of a group sits in one zone", lambda: h().stop("app-3").stop("app-4")
         .stop("app-5").stop("app-6"), "group_single_zone zone:us-east-1a [app-1,app-2]"),
    case("the primary's zone replica stopped", lambda: h().stop("db-2"),
         "db_zone_replica_missing region:us-east-1 [db-2]"),
    case("the zone replica's database check is critical (not streaming)",
         lambda: h().layer("db-2", Layer.AGENT, Health.UP, detail=pg("replica", "critical")),
         "db_zone_replica_missing region:us-east-1 [db-2]"),
    case("the cross-region replica stopped", lambda: h().stop("db-3"),
         "region_replica_missing region:eu-west-1 [db-3]"),
    case("the cross-region replica lags beyond the RPO (15m)",
         lambda: h().layer("db-3", Layer.AGENT, Health.UP, detail=pg("replica", lag_s=1200.0)),
         "region_replica_lagging region:eu-west-1 [db-3]"),
    case("the cross-region replica lags within the RPO",
         lambda: h().layer("db-3", Layer.AGENT, Health.UP, detail=pg("replica", lag_s=12.5))),
    case("no load balancer image in the standby region", h,
         "standby_image_missing region:eu-west-1 []",
         imgs={"us-east-1": images(*ROLES), "eu-west-1": images("app_server", "database")}),
    case("the standby region's images not listed yet: unknown, nothing said", h,
         imgs={"us-east-1": images(*ROLES)}),
    case("a data class that may not live in the standby region", h,
         "residency_blocks_failover region:eu-west-1 []",
         residency={"orders": ("us-east-1",), "app-config": ("us-east-1", "eu-west-1")}),
    case("no database role known at all: nothing that needs the serving region",
         lambda: h().db_role("db-1", None).db_role("db-2", None).db_role("db-3", None)
         .stop("lb-eu-1")),
    case("DNS records match: PRIMARY at us-east-1 (the primary database), SECONDARY at eu-west-1",
         h, records=dns()),
    case("the DNS PRIMARY record points at eu-west-1 while db-1 (us-east-1) is the primary",
         h, "dns_mismatch region:eu-west-1 []", records=dns("203.0.113.9", "198.51.100.1")),
    case("no SECONDARY record: Route 53 has nowhere to fail over to",
         h, "dns_mismatch region:us-east-1 []", records=dns(secondary=None)),
    case("after a failover eu-west-1 serves: its one load balancer has no second zone",
         _failed_over, "lb_standby_missing region:eu-west-1 []",
         "db_zone_replica_missing region:eu-west-1 []"),
]  # fmt: skip


def render(d: Diagnosis, world: World) -> str:
    names = sorted(i.name for t in d.targets if (i := world.fleet.get(t)) is not None)
    return f"{d.finding.value} {d.key} [{','.join(names)}]"


def run(c: Case) -> tuple[World, tuple[Diagnosis, ...]]:
    world = c.world()
    snap = world.snapshot()
    inp = ReadinessInput(
        snapshot=snap,
        now=NOW,
        rules=RULES,
        regions=serving_regions(
            snap, configured=("us-east-1", "eu-west-1"), records=c.records, address_regions=ADDRS
        ),
        cfg=ReadinessConfig(residency=MappingProxyType(dict(c.residency))),
        images=c.images,
    )
    return world, assess_readiness(inp).diagnoses


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_readiness(c: Case) -> None:
    """The fleet's gaps make exactly the expected readiness warnings, each with evidence."""
    world, found = run(c)
    assert {render(d, world) for d in found} == c.expected
    for d in found:
        assert d.severity is Severity.WARNING
        assert d.finding in READINESS_FINDINGS
        assert d.evidence


def test_every_rule_has_a_case_that_fires() -> None:
    """Each rule in the table is exercised by at least one row that expects its finding."""
    expected = {e.split()[0] for c in CASES for e in c.expected}
    assert expected == {f.value for f in READINESS_FINDINGS}
    assert len(READINESS_RULES) == 7


def test_lagging_replica_says_how_far_behind_and_the_rpo() -> None:
    """The lag warning's evidence and facts give the lag and the RPO it breaks."""
    lagging = next(c for c in CASES if c.id.startswith("the cross-region replica lags beyond"))
    _, (d,) = run(lagging)
    assert dict(d.facts) == {"lag_s": "1200.000", "rpo_s": "900"}
    assert "db-3 lags 1200.0 s behind the primary, more than the RPO (15m)" in d.evidence


@pytest.mark.parametrize(
    ("residency", "to", "expected"),
    [
        ({}, "eu-west-1", None),
        ({"orders": ("us-east-1", "eu-west-1")}, "eu-west-1", None),
        (
            {"orders": ("us-east-1",), "app-config": ("eu-west-1",)},
            "eu-west-1",
            "residency: a failover to eu-west-1 would move data it may not hold "
            "(orders may live only in us-east-1)",
        ),
        (
            {"orders": ("us-east-1",), "users": ("us-east-1", "us-west-2")},
            "eu-west-1",
            "residency: a failover to eu-west-1 would move data it may not hold "
            "(orders may live only in us-east-1; users may live only in us-east-1, us-west-2)",
        ),
    ],
)
def test_residency_refusal(
    residency: dict[str, tuple[str, ...]], to: str, expected: str | None
) -> None:
    """region.failover's residency check: the reason names every class the move breaks."""
    assert residency_refusal(residency, to) == expected


def test_readiness_config_from_the_config() -> None:
    """A database group's RPO is its data class's; residency comes from [residency]."""
    cfg = parse(
        {
            "provider": {"regions": ["us-east-1", "eu-west-1"]},
            "agent": {"secret_file": "/dev/null"},
            "objectives": {"rpo": "15m", "data_classes": {"orders": {"rpo": "1m", "rto": "5m"}}},
            "groups": [
                {"name": "db", "role": "database", "data_class": "orders",
                 "select": {"tags": {"g": "db"}}},
                {"name": "app", "role": "app_server", "select": {"tags": {"g": "app"}}},
            ],
            "residency": {"orders": ["us-east-1", "eu-west-1"]},
        }
    )  # fmt: skip
    rc = ReadinessConfig.from_config(cfg)
    assert (rc.rpo_of("db"), rc.rpo_of("app")) == (60.0, 900.0)
    assert dict(rc.residency) == {"orders": ("us-east-1", "eu-west-1")}


def _roles(**kw: object) -> RegionRoles:
    base: dict[str, object] = {"regions": ("us-east-1", "eu-west-1")}
    base.update(kw)
    return RegionRoles(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("roles", "lost", "expected"),
    [
        (_roles(serving="us-east-1", standby="eu-west-1"), set(),
         (True, "eu-west-1 stands by for us-east-1")),
        (_roles(serving="us-east-1", standby="eu-west-1"), {"eu-west-1"},
         (False, "none: the standby region eu-west-1 is lost (dr_capacity_lost)")),
        (_roles(regions=("us-east-1",), serving="us-east-1"), set(),
         (False, "none: us-east-1 serves and no region stands by")),
        (_roles(detail="serving region unknown: x"), set(),
         (False, "unknown: serving region unknown: x")),
    ],
)  # fmt: skip
def test_regional_fallback(roles: RegionRoles, lost: set[str], expected: tuple[bool, str]) -> None:
    """A fallback exists only with a known serving region and a standby that is not lost."""
    assert regional_fallback(roles, lost) == expected


def test_status_says_when_the_service_has_no_regional_fallback() -> None:
    """The status's readiness part: a dr_capacity_lost finding in the tick's findings
    means no regional fallback; readiness warnings join the findings by name."""
    world, found = run(next(c for c in CASES if c.id.startswith("the standby region's load")))
    report = ReadinessReport(found, serving_regions(world.snapshot()))
    doc: dict[str, Any] = {"findings": [{"finding": "dr_capacity_lost", "region": "eu-west-1"}]}
    extend_status(doc, ReadinessState(report), {i.id: i.name for i in world.fleet})
    r = doc["readiness"]
    assert (r["serving_region"], r["standby_region"], r["regional_fallback"]) == (
        "us-east-1",
        "eu-west-1",
        False,
    )
    assert r["pending"] == []
    assert [(f["finding"], f.get("targets")) for f in doc["findings"]] == [
        ("dr_capacity_lost", None),
        ("lb_standby_missing", ["lb-eu-1"]),
    ]
