"""The health store: raw observations in, per-(target, layer) health out, with rise/fall
hysteresis so one lost packet is not an outage and one lucky answer is not a recovery.

The rules, per (target, layer), each counted over consecutive observations:

- a target starts UNKNOWN (nothing seen yet);
- `rise` UP observations in a row make it UP;
- `fall` DOWN observations since the last UP make it DOWN. UNKNOWN observations
  (timeouts, network errors) do not count toward DOWN, and do not reset the count
  either: a target alternating "500" and "timeout" is still going down;
- `fall` UNKNOWN observations in a row make it UNKNOWN, from UP or from DOWN: we no
  longer know, and a timeout is never evidence of DOWN (assess corroborates it with
  other layers instead).

`record()` returns a `Transition` only when the debounced health changes, and logs it
once (`target.up`, `target.down`, `target.unknown`); repeats are silent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from drwatch.config import TimingConfig
from drwatch.logs import get_logger
from drwatch.model.fleet import Fleet
from drwatch.model.observation import Health, Layer, Observation, TargetHealth
from drwatch.model.snapshot import HealthKey, Snapshot


def _logger() -> Any:
    # Bound at use, not import: a logger bound before logs.configure() keeps the defaults.
    return get_logger(component="health")


RiseFall = tuple[int, int]
# Layers whose targets are instance ids: the snapshot keeps them only for the current fleet.
INSTANCE_LAYERS = frozenset({Layer.PROVIDER, Layer.AGENT, Layer.APP})
_DEFAULT_RISE_FALL: RiseFall = (1, 1)


@dataclass(frozen=True, slots=True)
class Transition:
    """The debounced health of (target, layer) changed from `old` to `new` at `at`."""

    target: str
    layer: Layer
    old: Health
    new: Health
    at: float
    reason: str = ""


def hysteresis_from(timing: TimingConfig) -> dict[Layer, RiseFall]:
    """Rise/fall per layer from the timing config. The service layer shares the app's;
    zone and api observations come from the provider's API and share its counts."""
    pairs = {
        Layer.PROVIDER: timing.provider,
        Layer.AGENT: timing.agent,
        Layer.APP: timing.app,
        Layer.SERVICE: timing.app,
        Layer.ZONE: timing.provider,
        Layer.API: timing.provider,
        Layer.CANARY: timing.canary,
    }
    return {layer: (t.rise, t.fall) for layer, t in pairs.items()}


@dataclass(slots=True)
class _Counts:
    """Consecutive-observation counters of one (target, layer)."""

    ups: int = 0
    downs: int = 0  # DOWNs since the last UP (UNKNOWNs in between do not reset it)
    unknowns: int = 0  # UNKNOWNs in a row

    def add(self, health: Health) -> None:
        if health is Health.UP:
            self.ups, self.downs, self.unknowns = self.ups + 1, 0, 0
        elif health is Health.DOWN:
            self.ups, self.downs, self.unknowns = 0, self.downs + 1, 0
        else:
            self.ups, self.unknowns = 0, self.unknowns + 1

    def verdict(self, current: Health, rise: int, fall: int) -> Health:
        if self.ups >= rise:
            return Health.UP
        if self.unknowns >= fall:
            return Health.UNKNOWN
        if self.downs >= fall:
            return Health.DOWN
        return current


class HealthStore:
    """Per-(target, layer) health after hysteresis. Not thread-safe: one event loop."""

    def __init__(
        self, timings: Mapping[Layer, RiseFall], *, default: RiseFall = _DEFAULT_RISE_FALL
    ) -> None:
        for layer, (rise, fall) in timings.items():
            if rise < 1 or fall < 1:
                raise ValueError(f"{layer}: rise and fall must be at least 1 (got {rise}/{fall})")
        self._timings = dict(timings)
        self._default = default
        self._health: dict[HealthKey, TargetHealth] = {}
        self._counts: dict[HealthKey, _Counts] = {}

    def record(self, obs: Observation) -> Transition | None:
        """Fold one observation in; return the transition if the debounced health changed."""
        key = (obs.target, obs.layer)
        counts = self._counts.setdefault(key, _Counts())
        counts.add(obs.health)
        before = self._health.get(key) or _initial(obs)
        rise, fall = self._timings.get(obs.layer, self._default)
        verdict = counts.verdict(before.health, rise, fall)
        changed = verdict is not before.health
        self._health[key] = TargetHealth(
            target=obs.target,
            layer=obs.layer,
            health=verdict,
            since=obs.attempted_at if changed else before.since,
            attempted_at=obs.attempted_at,
            ok_at=_latest(before.ok_at, obs),
            last=obs.health,
            reason=obs.reason,
            detail=obs.detail,
        )
        if not changed:
            return None
        tr = Transition(obs.target, obs.layer, before.health, verdict, obs.attempted_at, obs.reason)
        _log(tr)
        return tr

    def get(self, target: str, layer: Layer) -> TargetHealth | None:
        return self._health.get((target, layer))

    def keys(self) -> frozenset[HealthKey]:
        return frozenset(self._health)

    def forget(self, keys: Iterable[HealthKey]) -> None:
        """Drop what we hold of targets that left (their counts start over if they return)."""
        for key in keys:
            self._health.pop(key, None)
            self._counts.pop(key, None)

    def prune(self, fleet: Fleet) -> None:
        """Forget instance-layer entries of instances no longer in `fleet`."""
        gone = [k for k in self._health if k[1] in INSTANCE_LAYERS and fleet.get(k[0]) is None]
        self.forget(gone)

    def snapshot(self, fleet: Fleet, now: float) -> Snapshot:
        """A frozen copy for assess. Instance layers are restricted to `fleet`'s instances;
        service, zone, api and canary entries stay until `forget()`."""
        health = {
            key: th
            for key, th in self._health.items()
            if key[1] not in INSTANCE_LAYERS or fleet.get(key[0]) is not None
        }
        return Snapshot(taken_at=now, fleet=fleet, health=MappingProxyType(health))


def _initial(obs: Observation) -> TargetHealth:
    return TargetHealth(
        target=obs.target,
        layer=obs.layer,
        health=Health.UNKNOWN,
        since=obs.attempted_at,
        attempted_at=None,
        ok_at=None,
    )


def _latest(held: float | None, obs: Observation) -> float | None:
    seen = obs.ok_at
    if seen is None and obs.health is Health.UP:
        seen = obs.attempted_at
    if held is None:
        return seen
    return held if seen is None else max(held, seen)


def _log(tr: Transition) -> None:
    event = f"target.{tr.new}"
    fields = {"layer": str(tr.layer), "target": tr.target, "was": str(tr.old), "reason": tr.reason}
    if tr.new is Health.UP:
        _logger().info(event, **fields)
    else:
        _logger().warning(event, **fields)
