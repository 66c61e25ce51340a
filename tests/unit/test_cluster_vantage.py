"""Vantage corroboration as a table: silence needs a quorum of fresh views and nobody
reaching the target; the provider's word needs no quorum; one vantage point on a whole
zone is an alert, not an action."""

from __future__ import annotations

import pytest

from drwatch.cluster.vantage import Basis, Seen, View, judge_target, judge_zone

NOW = 1_000.0
MAX_AGE = 25.0
U, S, Q = Seen.UP, Seen.SILENT, Seen.UNKNOWN


def views(*seen: Seen | None, age: float = 1.0) -> list[View]:
    """One view per watcher w1, w2, ... of target `i-1`; None: the watcher has no view."""
    return [
        View(f"w{n}", NOW - age, {"i-1": s}) for n, s in enumerate(seen, start=1) if s is not None
    ]


@pytest.mark.parametrize(
    ("case", "vs", "quorum", "expected"),
    [
        ("all three silent", views(S, S, S), 2, (True, Basis.QUORUM, ())),
        ("two of three silent, third unsure", views(S, S, Q), 2, (True, Basis.QUORUM, ())),
        ("one watcher's path is cut", views(S, U, U), 2, (False, Basis.REACHED, ("w1",))),
        ("two silent, one reaches it", views(S, S, U), 2, (False, Basis.REACHED, ("w1", "w2"))),
        ("one silent, others dead", views(S), 2, (False, Basis.TOO_FEW, ())),
        ("one watcher alone, quorum 1", views(S), 1, (True, Basis.QUORUM, ())),
        ("nobody has checked it", views(Q, Q, Q), 2, (False, Basis.TOO_FEW, ())),
        ("all answer", views(U, U, U), 2, (False, Basis.REACHED, ())),
    ],
)
def test_target_silence_table(
    case: str, vs: list[View], quorum: int, expected: tuple[bool, Basis, tuple[str, ...]]
) -> None:
    """(down, basis, cut) per case; a target's verdict is actionable exactly when down."""
    v = judge_target("i-1", vs, now=NOW, max_age=MAX_AGE, quorum=quorum)
    assert (v.down, v.basis, v.cut) == expected, case
    assert v.actionable == v.down, case


def test_stale_views_are_left_out_not_counted_as_silent() -> None:
    """Two silent views, but old: they say nothing of now."""
    stale = views(S, S, age=MAX_AGE + 1)
    v = judge_target("i-1", [*stale, *views(None, None, Q)], now=NOW, max_age=MAX_AGE, quorum=2)
    assert (v.down, v.basis) == (False, Basis.TOO_FEW)
    assert "silent from 0 of 1 fresh views (quorum 2)" in v.reason


def test_a_stale_view_that_reached_it_does_not_veto_fresh_silence() -> None:
    old_up = View("w3", NOW - MAX_AGE - 1, {"i-1": U})
    v = judge_target("i-1", [*views(S, S), old_up], now=NOW, max_age=MAX_AGE, quorum=2)
    assert (v.down, v.basis, v.silent_from) == (True, Basis.QUORUM, ("w1", "w2"))


def test_the_providers_word_needs_no_quorum() -> None:
    """Stopped at the provider: down, even if every watcher still reaches the address."""
    v = judge_target(
        "i-1", views(U, U), now=NOW, max_age=MAX_AGE, quorum=2, provider_says_down="stopped"
    )
    assert (v.down, v.basis, v.actionable, v.reason) == (
        True,
        Basis.PROVIDER,
        True,
        "provider: stopped",
    )


ZONE = ["i-1", "i-2", "i-3", "i-4"]


def zone_view(name: str, *seen: Seen, age: float = 1.0) -> View:
    return View(name, NOW - age, dict(zip(ZONE, seen, strict=True)))


@pytest.mark.parametrize(
    ("case", "vs", "expected"),
    [
        (
            "silent from all three",
            [zone_view(w, S, S, S, S) for w in ("w1", "w2", "w3")],
            (True, True, Basis.QUORUM, ()),
        ),
        (
            "one watcher cut from the zone",
            [zone_view("w1", S, S, S, S), zone_view("w2", U, U, U, S), zone_view("w3", U, U, U, U)],
            (False, False, Basis.REACHED, ("w1",)),
        ),
        (
            "three of four silent counts (share 0.75), from two",
            [zone_view("w1", S, S, S, U), zone_view("w2", S, S, U, S)],
            (True, True, Basis.QUORUM, ()),
        ),
        (
            "a single watcher: an alert, not an action",
            [zone_view("w1", S, S, S, S)],
            (True, False, Basis.QUORUM, ()),
        ),
    ],
)
def test_zone_silence_table(
    case: str, vs: list[View], expected: tuple[bool, bool, Basis, tuple[str, ...]]
) -> None:
    """(down, actionable, basis, cut) per case; quorum 2 of 3 watchers, 1 for one alone."""
    quorum = 1 if len(vs) == 1 else 2
    v = judge_zone(ZONE, vs, now=NOW, max_age=MAX_AGE, quorum=quorum, share=0.75)
    assert (v.down, v.actionable, v.basis, v.cut) == expected, case


def test_a_single_watcher_zone_alert_says_why_it_does_not_act() -> None:
    v = judge_zone(
        ZONE, [zone_view("w1", S, S, S, S)], now=NOW, max_age=MAX_AGE, quorum=1, share=0.75
    )
    assert "one vantage point only" in v.reason


def test_the_provider_impairing_a_zone_is_enough_with_one_watcher() -> None:
    v = judge_zone(
        ZONE,
        [zone_view("w1", S, S, S, S)],
        now=NOW,
        max_age=MAX_AGE,
        quorum=1,
        share=0.75,
        provider_says_impaired="zone us-east-1b impaired",
    )
    assert (v.down, v.actionable, v.basis) == (True, True, Basis.PROVIDER)


def test_a_view_round_trips_compactly() -> None:
    """Views are published as compact JSON: one letter per target."""
    v = View("w1", 12.5, {"i-1": U, "i-2": S, "i-3": Q})
    raw = v.to_json()
    assert raw == b'{"at":12.5,"t":{"i-1":"u","i-2":"s","i-3":"?"},"w":"w1"}'
    assert View.from_json(raw) == v
