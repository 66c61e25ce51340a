"""Timelines: faults played second by second through the real health store (hysteresis
with the sandbox's timings) into the cycle; what incidents open, and what never does.

These catch what a single snapshot cannot: layers that flip at different moments (a cut
uplink must never look like a dead fleet on the way down or on the way back up), and a
flapping app that hysteresis and the dead grace must absorb.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drwatch.config import LayerTiming, PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner, WatcherState
from drwatch.incidents import IncidentStore
from drwatch.model import Health, Layer, Observation
from drwatch.observe.store import HealthStore, hysteresis_from
from tests.scenarios.world import CANARIES, default_fleet, iid

SANDBOX_TIMING = TimingConfig(
    provider=LayerTiming(interval=2.0, timeout=1.0, rise=1, fall=2),
    agent=LayerTiming(interval=1.0, timeout=0.5, rise=2, fall=3),
    app=LayerTiming(interval=1.0, timeout=0.5, rise=2, fall=3),
    canary=LayerTiming(interval=1.0, timeout=0.5, rise=2, fall=3),
)
SANDBOX_POLICY = PolicyConfig(warmup=5.0, cooldown=60.0, max_concurrent=3, dead_grace=4.0)
T0 = 1_795_701_600.0
Verdict = tuple[Health, str, dict[str, Any]]
Fault = Callable[[float, str, Layer], Verdict | None]

UP: Verdict = (Health.UP, "", {})
HANG: Verdict = (Health.UNKNOWN, "timeout", {})
REFUSED: Verdict = (Health.DOWN, "connection refused", {})


def healthy(target: str, layer: Layer) -> Verdict:
    if layer is Layer.PROVIDER:
        return (Health.UP, "", {"state": "running", "system_status": "ok", "instance_status": "ok"})
    if layer is Layer.ZONE:
        return (Health.UP, "", {"state": "available"})
    return UP


@dataclass
class Run:
    opened: list[tuple[str, str, tuple[str, ...], str]]
    states: set[WatcherState]


def play(tmp_path: Path, fault: Fault, seconds: int = 45) -> Run:
    fleet = default_fleet()
    store = HealthStore(hysteresis_from(SANDBOX_TIMING))
    cycle = Cycle(SANDBOX_POLICY, SANDBOX_TIMING, IncidentStore(tmp_path), NullRunner(), T0 - 60)
    targets = [(i.id, layer) for i in fleet for layer in (Layer.AGENT, Layer.APP)]
    slow = [(i.id, Layer.PROVIDER) for i in fleet]
    slow += [(z, Layer.ZONE) for z in fleet.zones] + [(r, Layer.API) for r in fleet.regions]
    canaries = [(c, Layer.CANARY) for c in CANARIES]
    states: set[WatcherState] = set()
    for step in range(seconds):
        now = T0 + step
        due = targets + canaries + (slow if step % 2 == 0 else [])
        for target, layer in due:
            health, reason, detail = fault(step, target, layer) or healthy(target, layer)
            store.record(Observation(target, layer, health, now, reason=reason, detail=detail))
        if step >= 3:  # the sandbox waits until everything is healthy
            states.add(cycle.tick(store.snapshot(fleet, now + 0.6), now + 0.6).watcher_state)
    opened = [
        (
            i.scope.value,
            i.finding.value,
            tuple(sorted(i.target_names)),
            i.outcome.value if i.outcome else "",
        )
        for i in cycle.store.recent()
    ]
    return Run(opened, states)


def during(start: int, end: int, verdict: Verdict, match: Callable[[str, Layer], bool]) -> Fault:
    def fault(t: float, target: str, layer: Layer) -> Verdict | None:
        return verdict if start <= t < end and match(target, layer) else None

    return fault


def combine(*faults: Fault) -> Fault:
    def fault(t: float, target: str, layer: Layer) -> Verdict | None:
        return next((v for f in faults if (v := f(t, target, layer)) is not None), None)

    return fault


def _in(names: tuple[str, ...], layers: tuple[Layer, ...]) -> Callable[[str, Layer], bool]:
    ids = {iid(n) for n in names}
    return lambda target, layer: target in ids and layer in layers


EU = ("db-3", "app-eu-1", "lb-eu-1")
US_1C = ("app-5", "app-6")
HOST = (Layer.AGENT, Layer.APP)


def _everything(target: str, layer: Layer) -> bool:
    return True


def _flap(t: float, target: str, layer: Layer) -> Verdict | None:
    if target == iid("app-1") and layer is Layer.APP and 5 <= t < 35 and int(t // 2) % 2 == 0:
        return (Health.DOWN, "HTTP 500", {})
    return None


CASES: dict[str, tuple[Fault, list[tuple[str, str, tuple[str, ...], str]]]] = {
    "cut uplink: no incident on the way down or back up": (during(5, 30, HANG, _everything), []),
    "cut uplink refusing connections: still no incident": (during(5, 30, REFUSED, _everything), []),
    "uplink heals, hosts answer 3 s after the provider and canaries: no incident": (
        combine(
            during(5, 30, REFUSED, _everything),
            during(30, 33, REFUSED, lambda t, lyr: lyr in HOST),
        ),
        [],
    ),
    "flap-app every 2 s: no incident": (_flap, []),
    "kill-agent: degraded, detected only": (
        during(5, 30, REFUSED, _in(("app-2",), (Layer.AGENT,))),
        [("instance", "agent_down", ("app-2",), "detected_only")],
    ),
    "stop-instance": (
        combine(
            during(
                5,
                99,
                (Health.DOWN, "stopped", {"state": "stopped"}),
                _in(("app-3",), (Layer.PROVIDER,)),
            ),
            during(5, 99, REFUSED, _in(("app-3",), HOST)),
        ),
        [("instance", "instance_stopped", ("app-3",), "detected_only")],
    ),
    "zone outage: one zone incident": (
        combine(
            during(
                5,
                99,
                (Health.DOWN, "zone impaired", {"state": "impaired"}),
                lambda t, lyr: t == "us-east-1c" and lyr is Layer.ZONE,
            ),
            during(5, 99, HANG, _in(US_1C, HOST)),
        ),
        [("zone", "zone_outage", ("app-5", "app-6"), "detected_only")],
    ),
    "a zone silent from here, the provider fine: one alert, no instance replaced": (
        during(5, 99, HANG, _in(US_1C, HOST)),
        [("zone", "zone_unreachable", ("app-5", "app-6"), "detected_only")],
    ),
    "a zone refusing from here, the provider fine: one alert, no instance replaced": (
        during(5, 99, REFUSED, _in(US_1C, HOST)),
        [("zone", "zone_unreachable", ("app-5", "app-6"), "detected_only")],
    ),
    "region outage: one region incident awaiting approval": (
        combine(
            during(5, 99, REFUSED, lambda t, lyr: t == "eu-west-1" and lyr is Layer.API),
            during(
                5, 99, (Health.UNKNOWN, "region API unreachable", {}), _in(EU, (Layer.PROVIDER,))
            ),
            during(
                5,
                99,
                (Health.UNKNOWN, "region API unreachable", {}),
                lambda t, lyr: t == "eu-west-1a" and lyr is Layer.ZONE,
            ),
            during(5, 99, HANG, _in(EU, HOST)),
        ),
        [("region", "region_outage", ("app-eu-1", "db-3", "lb-eu-1"), "awaiting_approval")],
    ),
    "api outage: provider_api only": (
        combine(
            during(5, 35, REFUSED, lambda t, lyr: t == "us-east-1" and lyr is Layer.API),
            during(
                5,
                35,
                (Health.UNKNOWN, "region API unreachable", {}),
                lambda t, lyr: (
                    lyr in (Layer.PROVIDER, Layer.ZONE)
                    and not t.startswith(("i-db-3", "i-app-eu", "i-lb-eu", "eu-"))
                ),
            ),
        ),
        [("provider_api", "provider_api_down", (), "detected_only")],
    ),
    "throttled API: nothing": (
        during(
            5,
            30,
            (Health.UNKNOWN, "throttled", {}),
            lambda t, lyr: (
                lyr in (Layer.API, Layer.PROVIDER, Layer.ZONE)
                and not t.startswith(("eu-", "i-db-3", "i-app-eu", "i-lb-eu"))
            ),
        ),
        [],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_timeline(name: str, tmp_path: Path) -> None:
    """Played through hysteresis and the cycle, the fault opens exactly these incidents."""
    fault, expected = CASES[name]
    run = play(tmp_path, fault)
    assert run.opened == expected


def test_cut_uplink_shows_the_watcher_impaired(tmp_path: Path) -> None:
    """While the uplink is cut, the watcher's own state is impaired."""
    run = play(tmp_path, during(5, 30, HANG, _everything))
    assert WatcherState.IMPAIRED in run.states
