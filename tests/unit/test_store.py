"""HealthStore: rise/fall hysteresis per (target, layer), transitions, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from drwatch.config import TimingConfig
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.store import HealthStore, hysteresis_from

U, D, X = Health.UP, Health.DOWN, Health.UNKNOWN


def obs(health: Health, at: float, target: str = "i-1", layer: Layer = Layer.APP) -> Observation:
    ok_at = at if health is Health.UP else None
    return Observation(target, layer, health, attempted_at=at, ok_at=ok_at, reason=f"r{at:g}")


def feed(store: HealthStore, seq: list[Health]) -> list[Health]:
    """The debounced health after each observation of `seq`."""
    out = []
    for t, h in enumerate(seq):
        store.record(obs(h, float(t)))
        got = store.get("i-1", Layer.APP)
        assert got is not None
        out.append(got.health)
    return out


CASES = [
    # (name, rise, fall, observations, debounced health after each)
    ("starts unknown, rises after rise UPs", 2, 3, [U, U, U], [X, U, U]),
    ("falls after fall DOWNs", 1, 3, [U, D, D, D], [U, U, U, D]),
    ("one DOWN is not an outage", 1, 3, [U, D, U, D, D, U], [U, U, U, U, U, U]),
    ("one UP is not a recovery", 2, 2, [D, D, U, D, U, U], [X, D, D, D, D, U]),
    ("timeouts alone make UNKNOWN, never DOWN", 1, 3, [U, X, X, X, X], [U, U, U, X, X]),
    ("UNKNOWN neither counts toward nor resets DOWN", 1, 3, [U, D, X, D, X, D], [U, U, U, U, U, D]),
    ("DOWN then timeouts becomes UNKNOWN", 1, 2, [D, D, X, X], [X, D, D, X]),
    ("an UP resets the DOWN count", 1, 3, [U, D, D, U, D, D], [U, U, U, U, U, U]),
    ("rise=1 fall=1 follows every observation", 1, 1, [U, D, X, U], [U, D, X, U]),
]


@pytest.mark.parametrize(
    ("rise", "fall", "seq", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hysteresis_table(rise: int, fall: int, seq: list[Health], want: list[Health]) -> None:
    """Debounced health follows the rise/fall rules documented in store.py."""
    store = HealthStore({Layer.APP: (rise, fall)})
    assert feed(store, seq) == want


def test_transition_returned_and_logged_once() -> None:
    """A change of debounced health returns one Transition and logs target.<health> once."""
    store = HealthStore({Layer.APP: (1, 2)})
    with capture_logs() as logs:
        results = [store.record(obs(h, float(t))) for t, h in enumerate([U, D, D, D, D])]
    transitions = [r for r in results if r is not None]
    assert [(t.old, t.new, t.at) for t in transitions] == [(X, U, 0.0), (U, D, 2.0)]
    assert [e["event"] for e in logs] == ["target.up", "target.down"]
    assert logs[1]["target"] == "i-1"
    assert logs[1]["layer"] == "app"
    assert logs[1]["reason"] == "r2"


def test_times_kept() -> None:
    """since is when the verdict took its value; ok_at the last UP; attempted_at the latest."""
    store = HealthStore({Layer.APP: (1, 2)})
    for t, h in enumerate([U, U, D, D, D]):
        store.record(obs(h, 10.0 + t))
    th = store.get("i-1", Layer.APP)
    assert th is not None
    assert (th.health, th.since, th.ok_at, th.attempted_at) == (D, 13.0, 11.0, 14.0)
    assert (th.last, th.reason) == (D, "r14")


def test_layers_and_targets_are_independent() -> None:
    """Each (target, layer) has its own counters and its own rise/fall."""
    store = HealthStore({Layer.APP: (1, 1), Layer.AGENT: (1, 3)})
    store.record(obs(U, 0, layer=Layer.AGENT))
    store.record(obs(D, 1, layer=Layer.AGENT))
    store.record(obs(D, 1, layer=Layer.APP))
    store.record(obs(U, 1, target="i-2"))
    assert store.get("i-1", Layer.AGENT).health is U  # type: ignore[union-attr]
    assert store.get("i-1", Layer.APP).health is D  # type: ignore[union-attr]
    assert store.get("i-2", Layer.APP).health is U  # type: ignore[union-attr]


def _inst(iid: str) -> Instance:
    return Instance(id=iid, name=iid, region="r", zone="z", role=Role.APP_SERVER, group="g")


def test_snapshot_restricted_to_fleet_and_frozen() -> None:
    """The snapshot holds instance layers of current instances only, plus non-instance
    layers, and later records do not change it."""
    store = HealthStore({})
    store.record(obs(U, 0, target="i-1"))
    store.record(obs(U, 0, target="i-gone"))
    store.record(obs(U, 0, target="lb", layer=Layer.SERVICE))
    snap = store.snapshot(Fleet((_inst("i-1"),)), now=5.0)
    assert set(snap.health) == {("i-1", Layer.APP), ("lb", Layer.SERVICE)}
    assert snap.taken_at == 5.0
    store.record(obs(D, 1, target="i-1"))
    assert snap.get("i-1", Layer.APP).health is U  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        snap.health[("x", Layer.APP)] = snap.health[("i-1", Layer.APP)]  # type: ignore[index]


def test_forget_and_prune_start_over() -> None:
    """Forgotten targets lose their state; if they return, hysteresis starts from UNKNOWN."""
    store = HealthStore({Layer.APP: (2, 2)})
    for t in range(3):
        store.record(obs(U, t, target="i-1"))
        store.record(obs(U, t, target="i-2"))
    store.prune(Fleet((_inst("i-1"),)))
    assert store.get("i-2", Layer.APP) is None
    store.forget([("i-1", Layer.APP)])
    assert store.keys() == frozenset()
    store.record(obs(U, 9, target="i-1"))
    assert store.get("i-1", Layer.APP).health is X  # type: ignore[union-attr]


def test_hysteresis_from_config() -> None:
    """Rise/fall come from the timing config; service follows app, zone and api the provider."""
    timing = TimingConfig()
    pairs = hysteresis_from(timing)
    assert pairs[Layer.APP] == pairs[Layer.SERVICE] == (timing.app.rise, timing.app.fall)
    assert pairs[Layer.ZONE] == (timing.provider.rise, timing.provider.fall)
    assert set(pairs) == set(Layer)


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    seq=st.lists(st.sampled_from([U, D, X]), max_size=40),
)
def test_hysteresis_properties(rise: int, fall: int, seq: list[Health]) -> None:
    """For any sequence, a change to DOWN follows `fall` DOWNs since the last UP, a change to
    UP follows `rise` UPs in a row, a change to UNKNOWN follows `fall` timeouts in a row,
    and timeouts alone never make a target DOWN."""
    store = HealthStore({Layer.APP: (rise, fall)})
    got = feed(store, seq)
    for i, health in enumerate(got):
        seen = seq[: i + 1]
        if health is (got[i - 1] if i else X):
            continue
        if health is D:
            since_up = seen[len(seen) - seen[::-1].index(U) :] if U in seen else seen
            assert since_up.count(D) >= fall
        elif health is U:
            assert seen[-rise:] == [U] * rise
        else:
            assert seen[-fall:] == [X] * fall
    if D not in seq:
        assert D not in got
