"""Vantage in the loop: one watcher's silence, weighed against the others' fresh views
before assess sees it (drwatch.cluster.corroborate). Pure: no etcd, no clock."""

from __future__ import annotations

import dataclasses

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


# -- the corroborated grace ----------------------------------------------------------------

# app-3 went dark 15 s ago: past a 10 s corroborated grace, within the 30 s dead grace.
GRACES = dataclasses.replace(RULES, dead_grace=30.0, corroborated_grace=10.0)
DARK_FOR = 15.0


def _unreachable(snapshot: Snapshot) -> bool:
    result = assess(snapshot, NOW, GRACES)
    return any(
        d.finding is Finding.INSTANCE_UNREACHABLE and d.targets == (iid("app-3"),)
        for d in result.incidents
    )


def _dark_app3() -> World:
    return World.healthy().dark("app-3", since=NOW - DARK_FOR)


def test_silence_two_watchers_see_counts_after_the_corroborated_grace() -> None:
    """Silent from here and from w2 (quorum 2 of 3): named in the snapshot's
    `corroborated`, and dead after the shorter grace; alone, it would still be a suspect."""
    world = _dark_app3()
    assert not _unreachable(world.snapshot())  # one watcher: the full dead grace
    out = corroborate(
        world.snapshot(),
        [_other("w2", {"app-3": Seen.SILENT})],
        me="w1",
        now=NOW,
        cfg=GRACES,
        quorum=2,
        max_age=10.0,
    )
    assert out.corroborated == frozenset({iid("app-3")})
    assert out.snapshot.corroborated == out.corroborated
    assert _unreachable(out.snapshot)


@pytest.mark.parametrize(
    ("others", "quorum"),
    [
        ([], 1),  # a quorum of one (configured so): this watcher alone is not corroboration
        ([_other("w2", {"app-3": Seen.UP}), _other("w3", {"app-3": Seen.SILENT})], 2),
        ([_other("w2", {"app-3": Seen.SILENT}, at=NOW - 60)], 2),  # stale
    ],
    ids=["quorum-of-one", "another-reaches-it", "stale-view"],
)
def test_no_shorter_grace_without_two_fresh_silent_views(others: list[View], quorum: int) -> None:
    """The shorter grace needs two watchers' fresh silence and none reaching the host."""
    out = corroborate(
        _dark_app3().snapshot(), others, me="w1", now=NOW, cfg=GRACES, quorum=quorum, max_age=10.0
    )
    assert out.corroborated == frozenset()
    assert not _unreachable(out.snapshot)


def test_the_corroborated_grace_is_never_longer_than_the_dead_grace() -> None:
    """corroborated_grace 25 s, dead_grace 20 s: corroborated silence counts at 20 s."""
    cfg = dataclasses.replace(GRACES, dead_grace=20.0, corroborated_grace=25.0)
    snap = dataclasses.replace(_dark_app3().snapshot(), corroborated=frozenset({iid("app-3")}))

    def dead_at(now: float) -> bool:
        return any(
            d.finding is Finding.INSTANCE_UNREACHABLE for d in assess(snap, now, cfg).incidents
        )

    assert not dead_at(NOW)  # dark 15 s
    assert dead_at(NOW + 5.5)  # dark 20.5 s: the dead grace, not 25 s


def test_a_zone_silent_from_a_quorum_keeps_the_full_grace_and_stays_an_alert() -> None:
    """Corroborated silence across most of us-east-1b, the provider saying running. The
    shorter grace is for one host: the zone's silence matures after the full dead grace
    (its instances are absorbed meanwhile: no instance is replaced one by one), and then
    it is zone_unreachable (an alert), never zone_outage: silence alone never acts on a
    zone."""
    world = World.healthy()
    for name in ZONE_B:
        world = world.dark(name, since=NOW - DARK_FOR)
    silent = {n: Seen.SILENT for n in ZONE_B}
    out = corroborate(
        world.snapshot(),
        [_other("w2", silent)],
        me="w1",
        now=NOW,
        cfg=GRACES,
        quorum=2,
        max_age=10.0,
    )
    assert out.corroborated == frozenset(iid(n) for n in ZONE_B)
    early = assess(out.snapshot, NOW, GRACES)
    assert early.incidents == ()
    assert Finding.ZONE_SUSPECT in early.findings()
    late = {d.finding for d in assess(out.snapshot, NOW + 16.0, GRACES).incidents}
    assert late == {Finding.ZONE_UNREACHABLE}
