"""Golden scenarios: the default topology, a fault, and the findings assess must make.

Each row: a world builder and the expected incident-opening diagnoses, written as
`finding key [target names]`; optionally the warnings that must (also) appear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType

import pytest

from drwatch.assess import assess
from drwatch.model import Fleet, Health, Layer, Snapshot
from drwatch.model.findings import Diagnosis
from drwatch.model.snapshot import Discovery
from tests.scenarios.world import JUST_NOW, NOW, RULES, World, iid


@dataclass(frozen=True)
class Case:
    id: str
    world: Callable[[], World]
    incidents: frozenset[str]
    warnings: frozenset[str] = frozenset()
    retired: frozenset[str] = frozenset()


def case(
    cid: str,
    world: Callable[[], World],
    incidents: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
    retired: tuple[str, ...] = (),
) -> Case:
    return Case(
        cid, world, frozenset(incidents), frozenset(warnings), frozenset(iid(n) for n in retired)
    )


def h() -> World:
    return World.healthy()


def _disk(pct: float, **extra: object) -> dict[str, object]:
    return {"disks": [{"mount": "/", "percent": pct, **extra}]}


US1A = ["lb-1", "app-1", "app-2", "db-1"]
US_EAST = ["app-1", "app-2", "app-3", "app-4", "app-5", "app-6", "db-1", "db-2", "lb-1", "lb-2"]


def _dark_all(world: World, names: list[str], **kw: object) -> World:
    for n in names:
        world.dark(n, **kw)  # type: ignore[arg-type]
    return world


def _everything_silent() -> World:
    w = h()
    for key, th in list(w.health.items()):
        w.set(key[0], key[1], Health.UNKNOWN, reason="timeout", detail=dict(th.detail))
    return w


def _uplink_just_healed() -> World:
    w = _dark_all(
        h().provider_blind("eu-west-1"), ["db-3", "app-eu-1", "lb-eu-1"], health=Health.UNKNOWN
    )
    return w.layer("canary-a", Layer.CANARY, Health.UP, since=JUST_NOW).layer(
        "canary-b", Layer.CANARY, Health.UP, since=JUST_NOW
    )


CASES = [
    case("healthy", h),
    case("one instance stopped", lambda: h().stop("app-3"),
         ("instance_stopped instance:i-app-3 [app-3]",)),
    case("one instance stopping", lambda: h().stop("app-3", state="stopping"),
         ("instance_stopped instance:i-app-3 [app-3]",)),
    case("one instance terminated", lambda: h().stop("app-4", state="terminated"),
         ("instance_terminated instance:i-app-4 [app-4]",)),
    case("stopped just now still counts: the provider asserts it",
         lambda: h().stop("db-1", since=JUST_NOW),
         ("instance_stopped instance:i-db-1 [db-1]",)),
    case("status checks impaired, host silent", lambda: h().impair("app-4"),
         ("instance_impaired instance:i-app-4 [app-4]",)),
    case("status checks impaired but the host answers: a warning",
         lambda: h().layer("app-4", Layer.PROVIDER, Health.DOWN,
                           detail={"state": "running", "system_status": "impaired"}),
         (), ("status_check_impaired instance:i-app-4 [app-4]",)),
    case("running, agent and app down past the grace", lambda: h().dark("app-2"),
         ("instance_unreachable instance:i-app-2 [app-2]",)),
    case("running, agent and app down within the grace: suspect only",
         lambda: h().dark("app-2", since=JUST_NOW),
         (), ("instance_suspect instance:i-app-2 [app-2]",)),
    case("agent and app time out (unknown): never dead",
         lambda: h().dark("app-2", health=Health.UNKNOWN),
         (), ("instance_suspect instance:i-app-2 [app-2]",)),
    case("two instances in different zones: two instance incidents",
         lambda: h().stop("app-1").stop("app-3"),
         ("instance_stopped instance:i-app-1 [app-1]",
          "instance_stopped instance:i-app-3 [app-3]")),
    case("both instances of a zone stopped: explained by the provider, not a zone",
         lambda: h().stop("app-5").stop("app-6"),
         ("instance_stopped instance:i-app-5 [app-5]",
          "instance_stopped instance:i-app-6 [app-6]")),
    case("every instance of one zone silent, the provider says all is well: an alert",
         lambda: _dark_all(h(), US1A),
         ("zone_unreachable zone:us-east-1a [app-1,app-2,db-1,lb-1]",)),
    case("every instance of a one-role zone silent, provider fine: an alert, no instances",
         lambda: _dark_all(h(), ["app-5", "app-6"]),
         ("zone_unreachable zone:us-east-1c [app-5,app-6]",)),
    case("a zone silent from here, the provider cannot say: still only an alert",
         lambda: _dark_all(h().layer("us-east-1c", Layer.ZONE, Health.UNKNOWN), ["app-5", "app-6"]),
         ("zone_unreachable zone:us-east-1c [app-5,app-6]",)),
    case("a zone silent and an instance's status check impaired: the provider's word",
         lambda: _dark_all(h().impair("app-5"), ["app-6"]),
         ("zone_outage zone:us-east-1c [app-5,app-6]",)),
    case("zone reported impaired, its instances silent",
         lambda: _dark_all(h().zone_state("us-east-1c", "impaired"), ["app-5", "app-6"],
                           since=JUST_NOW, health=Health.UNKNOWN),
         ("zone_outage zone:us-east-1c [app-5,app-6]",)),
    case("zone reported impaired while its instances answer: a warning, no instance finding",
         lambda: h().zone_state("us-east-1b", "impaired"),
         (), ("zone_impaired zone:us-east-1b []",)),
    case("zone reported impaired and one instance there stopped",
         lambda: h().zone_state("us-east-1b", "impaired").stop("app-3"),
         ("zone_outage zone:us-east-1b [app-3]",)),
    case("three of four instances of a zone unreachable (two roles) past the grace",
         lambda: _dark_all(h(), ["lb-1", "app-1", "db-1"]),
         ("zone_unreachable zone:us-east-1a [app-1,db-1,lb-1]",)),
    case("zone share reached but within the grace: a zone suspect absorbs the instances",
         lambda: _dark_all(h(), US1A, since=JUST_NOW),
         (), ("zone_suspect zone:us-east-1a [app-1,app-2,db-1,lb-1]",)),
    case("half a zone down is below the share: instance incidents",
         lambda: _dark_all(h(), ["app-1", "app-2"]),
         ("instance_unreachable instance:i-app-1 [app-1]",
          "instance_unreachable instance:i-app-2 [app-2]")),
    case("a single-zone region dark with its API up: no other zone, so instances",
         lambda: _dark_all(h(), ["db-3", "app-eu-1", "lb-eu-1"]),
         ("instance_unreachable instance:i-app-eu-1 [app-eu-1]",
          "instance_unreachable instance:i-db-3 [db-3]",
          "instance_unreachable instance:i-lb-eu-1 [lb-eu-1]")),
    case("region API and instances unreachable, canaries fine",
         lambda: _dark_all(h().provider_blind("eu-west-1"), ["db-3", "app-eu-1", "lb-eu-1"],
                           health=Health.UNKNOWN),
         ("region_outage region:eu-west-1 [app-eu-1,db-3,lb-eu-1]",)),
    case("primary region lost: one region incident absorbs its zones",
         lambda: _dark_all(h().provider_blind("us-east-1"), US_EAST),
         ("region_outage region:us-east-1 [" + ",".join(sorted(US_EAST)) + "]",)),
    case("region lost within the grace: a suspect, no incident",
         lambda: _dark_all(h().provider_blind("eu-west-1", since=JUST_NOW),
                           ["db-3", "app-eu-1", "lb-eu-1"], since=JUST_NOW),
         (), ("region_suspect region:eu-west-1 [app-eu-1,db-3,lb-eu-1]",)),
    case("API down, instances fine: provider_api, no instance finding",
         lambda: h().provider_blind("us-east-1"),
         ("provider_api_down provider_api:us-east-1 []",)),
    case("API down just now: not yet an alert",
         lambda: h().provider_blind("us-east-1", since=JUST_NOW)),
    case("canaries down: watcher impaired, no incident",
         lambda: h().layer("canary-a", Layer.CANARY, Health.DOWN)
         .layer("canary-b", Layer.CANARY, Health.UNKNOWN)),
    case("canaries down with a region looking lost: still only the watcher",
         lambda: _dark_all(h().provider_blind("eu-west-1"), ["db-3", "app-eu-1", "lb-eu-1"])
         .layer("canary-a", Layer.CANARY, Health.DOWN)
         .layer("canary-b", Layer.CANARY, Health.DOWN)),
    case("cut uplink: everything silent at once", _everything_silent),
    case("one canary of two down: a warning only",
         lambda: h().layer("canary-a", Layer.CANARY, Health.DOWN),
         (), ("canary_failing watcher []",)),
    case("an app that fails one tick in three: hysteresis holds it up, no finding",
         lambda: h().layer("app-3", Layer.APP, Health.UP, last=Health.DOWN)),
    case("a flapping app that just went down: within the grace, suspect only",
         lambda: h().layer("app-3", Layer.APP, Health.DOWN, since=JUST_NOW),
         (), ("instance_suspect instance:i-app-3 [app-3]",)),
    case("app down past the grace while the agent answers: app failed",
         lambda: h().layer("app-3", Layer.APP, Health.DOWN, reason="HTTP 500"),
         ("app_failed instance:i-app-3 [app-3]",)),
    case("app times out past the grace while its agent answers: unresponsive, alert only",
         lambda: h().layer("app-4", Layer.APP, Health.UNKNOWN, reason="timeout after 0.5s"),
         ("app_unresponsive instance:i-app-4 [app-4]",)),
    case("app times out just now while its agent answers: within the grace",
         lambda: h().layer("app-4", Layer.APP, Health.UNKNOWN, since=JUST_NOW),
         (), ("instance_suspect instance:i-app-4 [app-4]",)),
    case("app times out and the agent times out too: no corroboration, never dead",
         lambda: h().layer("app-4", Layer.APP, Health.UNKNOWN)
         .layer("app-4", Layer.AGENT, Health.UNKNOWN),
         (), ("instance_suspect instance:i-app-4 [app-4]",)),
    case("a replacement launched a minute ago that has never answered: booting, a warning",
         lambda: h().launched("app-3", NOW - 60).never_answered("app-3"),
         (), ("instance_suspect instance:i-app-3 [app-3]",)),
    case("a fresh replacement whose agent is up but whose app has not started: nothing yet",
         lambda: h().launched("app-3", NOW - 60)
         .layer("app-3", Layer.APP, Health.DOWN, ok_at=None, reason="connection refused")),
    case("a fresh replacement that answered once but has not risen yet: still booting",
         lambda: h().launched("app-3", NOW - 60)
         .layer("app-3", Layer.AGENT, Health.DOWN, since=NOW - 50, ok_at=NOW - 1)
         .layer("app-3", Layer.APP, Health.DOWN, since=NOW - 50, ok_at=None),
         (), ("instance_suspect instance:i-app-3 [app-3]",)),
    case("a fresh replacement whose app is up but whose agent has not started: nothing yet",
         lambda: h().launched("app-3", NOW - 60)
         .layer("app-3", Layer.AGENT, Health.DOWN, ok_at=None, reason="connection refused")),
    case("launched past the boot grace and never answered: unreachable",
         lambda: h().launched("app-3", NOW - 600).never_answered("app-3"),
         ("instance_unreachable instance:i-app-3 [app-3]",)),
    case("launched recently, came up, then went dark: unreachable, not booting",
         lambda: h().launched("app-3", NOW - 60)
         .layer("app-3", Layer.AGENT, Health.DOWN, since=NOW - 40, ok_at=NOW - 41)
         .layer("app-3", Layer.APP, Health.DOWN, since=NOW - 40, ok_at=NOW - 41),
         ("instance_unreachable instance:i-app-3 [app-3]",)),
    case("a booting replacement does not count toward a zone outage",
         lambda: _dark_all(h().launched("app-5", NOW - 60).never_answered("app-5"), ["app-6"]),
         ("instance_unreachable instance:i-app-6 [app-6]",),
         ("instance_suspect instance:i-app-5 [app-5]",)),
    case("uplink just healed, canaries still rising: an API silent since the cut is no finding",
         lambda: h().layer("us-east-1", Layer.API, Health.UNKNOWN, reason="region API timeout")
         .layer("canary-a", Layer.CANARY, Health.UNKNOWN, since=JUST_NOW, last=Health.UP)
         .layer("canary-b", Layer.CANARY, Health.UNKNOWN, since=JUST_NOW, last=Health.UP)),
    case("no canary has answered yet: a dark instance is only a suspect",
         lambda: h().dark("app-2")
         .layer("canary-a", Layer.CANARY, Health.UNKNOWN, last=Health.UP)
         .layer("canary-b", Layer.CANARY, Health.UNKNOWN, last=Health.UP),
         (), ("instance_suspect instance:i-app-2 [app-2]",)),
    case("stale observations are unknown, not down",
         lambda: h().stop("app-3").stale("app-3", Layer.PROVIDER).stale("app-3", Layer.AGENT)
         .stale("app-3", Layer.APP)),
    case("a stale 'stopped' from the provider is not evidence",
         lambda: h().stop("app-3").stale("app-3", Layer.PROVIDER),
         (), ("instance_suspect instance:i-app-3 [app-3]",)),
    case("agent down, app up, provider running: degraded, not dead",
         lambda: h().layer("app-2", Layer.AGENT, Health.DOWN, reason="connection refused"),
         ("agent_down instance:i-app-2 [app-2]",)),
    case("agent down just now: within the grace",
         lambda: h().layer("app-2", Layer.AGENT, Health.DOWN, since=JUST_NOW),
         (), ("instance_suspect instance:i-app-2 [app-2]",)),
    case("disk above the threshold: a capacity warning, no incident",
         lambda: h().layer("db-1", Layer.AGENT, Health.UP, detail=_disk(93.0)),
         (), ("capacity_disk instance:i-db-1 [db-1]",)),
    case("disk at the agent's own warning level",
         lambda: h().layer("db-1", Layer.AGENT, Health.UP, detail=_disk(70.0, level="warning")),
         (), ("capacity_disk instance:i-db-1 [db-1]",)),
    case("disk the agent calls ok is ok, whatever the percentage",
         lambda: h().layer("db-1", Layer.AGENT, Health.UP, detail=_disk(95.0, level="ok"))),
    case("memory nearly full: a capacity warning",
         lambda: h().layer("app-1", Layer.AGENT, Health.UP, detail={"memory": {"percent": 97}}),
         (), ("capacity_memory instance:i-app-1 [app-1]",)),
    case("a retired (replaced) instance that is stopped is not judged",
         lambda: h().stop("app-3"), retired=("app-3",)),
    case("a booting instance with no observations yet is not judged",
         lambda: h().layer("app-3", Layer.PROVIDER, Health.UP, detail={"state": "pending"})
         .layer("app-3", Layer.AGENT, Health.UNKNOWN, last=Health.UNKNOWN)
         .layer("app-3", Layer.APP, Health.UNKNOWN, last=Health.UNKNOWN)),
    case("an instance the provider no longer lists is terminated",
         lambda: h().stop("app-4", state="not-found"),
         ("instance_terminated instance:i-app-4 [app-4]",)),
    case("a pending instance whose agent refuses while booting is not judged dead",
         lambda: h().layer("app-3", Layer.PROVIDER, Health.UNKNOWN, detail={"state": "pending"},
                           reason="pending")
         .layer("app-3", Layer.AGENT, Health.DOWN).layer("app-3", Layer.APP, Health.DOWN)),
    case("a throttled API is answering: no provider_api finding",
         lambda: h().layer("us-east-1", Layer.API, Health.UNKNOWN, reason="throttled")),
    case("uplink just healed: old silence counts from when the canaries came back",
         _uplink_just_healed, (), ("region_suspect region:eu-west-1 [app-eu-1,db-3,lb-eu-1]",)),
    case("zone still impaired after its instances were replaced: a warning only",
         lambda: _dark_all(h().zone_state("us-east-1c", "impaired"), ["app-5", "app-6"]),
         (), ("zone_impaired zone:us-east-1c []",), retired=("app-5", "app-6")),
    case("agent facts as the wire sends them: a disk at 96% used",
         lambda: h().layer("db-2", Layer.AGENT, Health.UP, detail={"disks": {"/data": {
             "mount": "/data", "total_bytes": 100, "free_bytes": 4, "used_percent": 96.0}}}),
         (), ("capacity_disk instance:i-db-2 [db-2]",)),
    case("the agent's own disk_free check at critical",
         lambda: h().layer("db-2", Layer.AGENT, Health.UP, detail={"checks": {"data-disk": {
             "name": "data-disk", "kind": "disk_free", "status": "critical",
             "data": {"free_percent": 4.0}}}}),
         (), ("capacity_disk instance:i-db-2 [db-2]",)),
]  # fmt: skip


def render(d: Diagnosis, world: World) -> str:
    names = sorted(i.name for t in d.targets if (i := world.fleet.get(t)) is not None)
    return f"{d.finding.value} {d.key} [{','.join(names)}]"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_scenario(c: Case) -> None:
    """The fleet and its health classify into exactly the expected incident findings,
    and the expected warnings appear."""
    world = c.world()
    result = assess(world.snapshot(), NOW, RULES, c.retired)
    assert {render(d, world) for d in result.incidents} == c.incidents
    assert c.warnings <= {render(d, world) for d in result.warnings}


def test_there_are_at_least_thirty_scenarios() -> None:
    """The golden table keeps its breadth."""
    assert len(CASES) >= 30


def test_canaries_down_is_the_watcher_and_nothing_else() -> None:
    """When every canary fails, the only diagnosis is the watcher's own impairment."""
    world = h().stop("app-3").layer("canary-a", Layer.CANARY, Health.DOWN)
    world.layer("canary-b", Layer.CANARY, Health.DOWN)
    result = assess(world.snapshot(), NOW, RULES)
    assert [d.finding.value for d in result.diagnoses] == ["watcher_impaired"]
    assert result.watcher_impaired is not None


def test_healthy_counts() -> None:
    """Healthy counts every watched instance whose layers all answer."""
    result = assess(h().stop("app-3").snapshot(), NOW, RULES)
    assert (result.healthy, result.total) == (12, 13)


def test_blind_watcher_is_a_watcher_finding() -> None:
    """Discovery refused from the start: an empty fleet while groups are configured is the
    watcher's own finding (status impaired, nothing healthy to report), with the reason."""
    blind = Snapshot(
        taken_at=NOW,
        fleet=Fleet(),
        discovery=Discovery(
            MappingProxyType({"us-east-1": "AuthFailure: credentials refused"}),
            ("web-lb", "app", "db"),
        ),
    )
    result = assess(blind, NOW, RULES)
    (d,) = result.diagnoses
    assert d.finding.value == "watcher_blind"
    assert result.watcher_impaired is d
    assert d.evidence == (
        "no instance found of group(s) web-lb, app, db; "
        "discovery failing (us-east-1: AuthFailure: credentials refused)"
    )
    empty = assess(replace(blind, discovery=Discovery(expected_groups=("app",))), NOW, RULES)
    assert [d.finding.value for d in empty.diagnoses] == ["watcher_blind"]


def test_discovery_failing_with_a_known_fleet_is_a_warning() -> None:
    """Discovery fails later, the last known instances are still watched: a warning."""
    snap = replace(
        h().snapshot(),
        discovery=Discovery(MappingProxyType({"eu-west-1": "timeout"}), ("app", "app-eu")),
    )
    result = assess(snap, NOW, RULES)
    assert result.watcher_impaired is None
    assert [d.finding.value for d in result.warnings] == ["discovery_failing"]


def test_zone_finding_names_region_zone_roles_and_evidence() -> None:
    """A zone diagnosis carries its region, zone, the roles inside and readable evidence."""
    world = _dark_all(h(), US1A)
    (d,) = assess(world.snapshot(), NOW, RULES).incidents
    assert (d.region, d.zone, d.role) == (
        "us-east-1",
        "us-east-1a",
        "app_server,database,load_balancer",
    )
    assert "4/4 instance(s) of us-east-1a unreachable" in d.evidence
    assert d.evidence.endswith(
        "the provider reports us-east-1a available and these instances running: alert only"
    )
