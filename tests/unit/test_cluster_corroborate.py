"""Vantage in the loop: one watcher's silence, weighed against the others' fresh views
before assess sees it (drwatch.cluster.corroborate). Pure: no etcd, no clock."""

from __future__ import annotations

import pytest

from drwatch.assess import assess
from drwatch.cluster.corroborate import Corroborated, corroborate, my_view
from drwatch.cluster.vantage import Seen, View
from drwatch.model.findings import Finding
from drwatch.model.snapshot import Snapshot
from tests.scenarios.world import NOW, RULES, World, iid

ZONE_B = ("app-3", "app-4", "lb-2", "db-2")


def _findings(snapshot: Snapshot) -> set[tuple[str, tuple[str, ...]]]:
    result = assess(snapshot, NOW, RULES)
    return {(d.finding.value, d.targets) for d in result.incidents}


def _zone_findings(snapshot: Snapshot) -> list[str]:
    """The zone findings (zone_outage, or zone_unreachable for silence alone)."""
    return [f for f, _ in _findings(snapshot) if f.startswith("zone_")]


def _other(name: str, seen: dict[str, Seen], at: float = NOW - 1) -> View:
    return View(name, at, {iid(n): s for n, s in seen.items()})


def _run(world: World, others: list[View], quorum: int = 2) -> tuple[Corroborated, Snapshot]:
    out = corroborate(
        world.snapshot(), others, me="w1", now=NOW, cfg=RULES, quorum=quorum, max_age=10.0
    )
    return out, out.snapshot


def test_my_view_says_who_answers_and_who_is_silent() -> None:
    """Up when agent or app answers; silent when neither does and the host has been up."""
    view = my_view("w1", World.healthy().dark("app-3").snapshot(), NOW, RULES)
    assert view.targets[iid("app-3")] is Seen.SILENT
    assert view.targets[iid("app-4")] is Seen.UP
    assert view.watcher == "w1"


@pytest.mark.parametrize(
    ("others", "down"),
    [
        ([_other("w2", {"app-3": Seen.UP}), _other("w3", {"app-3": Seen.SILENT})], False),
        ([_other("w2", {"app-3": Seen.SILENT})], True),
        ([], False),  # only my view is fresh: silent from 1 of 1, quorum 2
        ([_other("w2", {"app-3": Seen.SILENT}, at=NOW - 60)], False),  # stale: left out
        ([_other("w2", {"app-3": Seen.SILENT}), _other("w3", {"app-3": Seen.SILENT})], True),
    ],
    ids=["another-reaches-it", "quorum", "alone", "stale-view", "all-silent"],
)
def test_silence_needs_a_quorum_of_fresh_views(others: list[View], down: bool) -> None:
    """app-3 is silent from here while the provider says it runs: it is unreachable only
    when a quorum of fresh views sees it silent and none reaches it."""
    world = World.healthy().dark("app-3")
    assert (Finding.INSTANCE_UNREACHABLE.value, (iid("app-3"),)) in _findings(world.snapshot())
    out, snap = _run(world, others)
    unreachable = (Finding.INSTANCE_UNREACHABLE.value, (iid("app-3"),))
    assert (unreachable in _findings(snap)) is down
    assert ("app-3" in out.set_aside) is not down


def test_what_the_provider_asserts_needs_no_quorum() -> None:
    """A stopped instance is down whatever the other watchers see."""
    world = World.healthy().stop("app-3")
    _, snap = _run(world, [_other("w2", {"app-3": Seen.UP}), _other("w3", {"app-3": Seen.UP})])
    assert (Finding.INSTANCE_STOPPED.value, (iid("app-3"),)) in _findings(snap)


def test_a_zone_cut_from_this_watcher_only_is_its_own_state_not_an_outage() -> None:
    """us-east-1b silent from here, reached by the two others: no finding about the zone
    or its instances, and this watcher reports itself cut from us-east-1b."""
    world = World.healthy()
    for name in ZONE_B:
        world = world.dark(name)
    assert _zone_findings(world.snapshot())
    reach = {n: Seen.UP for n in ZONE_B}
    out, snap = _run(world, [_other("w2", reach), _other("w3", reach)])
    assert _findings(snap) == set()
    assert out.cut_zones == ("us-east-1b",)


def test_a_zone_silent_from_a_quorum_stays_an_outage() -> None:
    """Two of three watchers find us-east-1b silent and none reaches it: the zone finding
    stands (what it leads to, an alert for silence alone, is the lifecycle's rule)."""
    world = World.healthy()
    for name in ZONE_B:
        world = world.dark(name)
    silent = {n: Seen.SILENT for n in ZONE_B}
    out, snap = _run(world, [_other("w2", silent)])
    assert _zone_findings(snap)
    assert out.cut_zones == ()


def test_a_silent_provider_does_not_make_silence_count() -> None:
    """The region's API is silent too (an overloaded API, or this watcher's path to it):
    that asserts nothing, so app-3's silence here still needs a quorum."""
    world = World.healthy().dark("app-3").provider_blind("us-east-1")
    out, snap = _run(world, [_other("w2", {"app-3": Seen.UP}), _other("w3", {"app-3": Seen.UP})])
    assert (Finding.INSTANCE_UNREACHABLE.value, (iid("app-3"),)) not in _findings(snap)
    assert "app-3" in out.set_aside
