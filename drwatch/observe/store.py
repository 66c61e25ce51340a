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
from drwatch.model.observation import EMPTY, Health, Layer, Observation, TargetHealth
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


class _State:
    """Everything held for one (target, layer): the hysteresis counters and the latest
    facts. Mutable inside the store; readers get frozen `TargetHealth` views, built only
    when asked (a target checked many times between snapshots builds one view, not many)."""

    __slots__ = (
        "attempted_at",
        "detail",
        "downs",
        "health",
        "last",
        "layer",
        "ok_at",
        "reason",
        "since",
        "target",
        "unknowns",
        "ups",
        "view",
    )

    def __init__(self, target: str, layer: Layer, since: float) -> None:
        self.target, self.layer = target, layer
        self.health, self.since = Health.UNKNOWN, since
        self.ups = self.downs = self.unknowns = 0
        self.attempted_at: float | None = None
        self.ok_at: float | None = None
        self.last = Health.UNKNOWN
        self.reason = ""
        self.detail: Mapping[str, Any] = EMPTY
        self.view: TargetHealth | None = None

    def count(self, health: Health) -> None:
        """ups: UPs in a row; downs: DOWNs since the last UP (UNKNOWNs in between do not
        reset it); unknowns: UNKNOWNs in a row."""
        if health is Health.UP:
            self.ups, self.downs, self.unknowns = self.ups + 1, 0, 0
        elif health is Health.DOWN:
            self.ups, self.downs, self.unknowns = 0, self.downs + 1, 0
        else:
            self.ups, self.unknowns = 0, self.unknowns + 1

    def verdict(self, rise: int, fall: int) -> Health:
        if self.ups >= rise:
            return Health.UP
        if self.unknowns >= fall:
            return Health.UNKNOWN
        if self.downs >= fall:
            return Health.DOWN
        return self.health

    def take(self, obs: Observation) -> None:
        self.attempted_at = obs.attempted_at
        seen = obs.ok_at
        if seen is None and obs.health is Health.UP:
            seen = obs.attempted_at
        if seen is not None and (self.ok_at is None or seen > self.ok_at):
            self.ok_at = seen
        self.last, self.reason, self.detail = obs.health, obs.reason, obs.detail
        self.view = None

    def frozen(self) -> TargetHealth:
        if self.view is None:
            self.view = TargetHealth(
                target=self.target,
                layer=self.layer,
                health=self.health,
                since=self.since,
                attempted_at=self.attempted_at,
                ok_at=self.ok_at,
                last=self.last,
                reason=self.reason,
                detail=self.detail,
            )
        return self.view


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
        self._states: dict[HealthKey, _State] = {}

    def record(self, obs: Observation) -> Transition | None:
        """Fold one observation in; return the transition if the debounced health changed."""
        key = (obs.target, obs.layer)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(obs.target, obs.layer, obs.attempted_at)
        state.count(obs.health)
        state.take(obs)
        rise, fall = self._timings.get(obs.layer, self._default)
        verdict = state.verdict(rise, fall)
        if verdict is state.health:
            return None
        tr = Transition(obs.target, obs.layer, state.health, verdict, obs.attempted_at, obs.reason)
        state.health, state.since = verdict, obs.attempted_at
        _log(tr)
        return tr

    def get(self, target: str, layer: Layer) -> TargetHealth | None:
        state = self._states.get((target, layer))
        return None if state is None else state.frozen()

    def keys(self) -> frozenset[HealthKey]:
        return frozenset(self._states)

    def forget(self, keys: Iterable[HealthKey]) -> None:
        """Drop what we hold of targets that left (their counts start over if they return)."""
        for key in keys:
            self._states.pop(key, None)

    def prune(self, fleet: Fleet) -> None:
        """Forget instance-layer entries of instances no longer in `fleet`."""
        gone = [k for k in self._states if k[1] in INSTANCE_LAYERS and fleet.get(k[0]) is None]
        self.forget(gone)

    def snapshot(self, fleet: Fleet, now: float) -> Snapshot:
        """A frozen copy for assess. Instance layers are restricted to `fleet`'s instances;
        service, zone, api and canary entries stay until `forget()`."""
        health = {
            key: state.frozen()
            for key, state in self._states.items()
            if key[1] not in INSTANCE_LAYERS or fleet.get(key[0]) is not None
        }
        return Snapshot(taken_at=now, fleet=fleet, health=MappingProxyType(health))


def _log(tr: Transition) -> None:
    event = f"target.{tr.new}"
    fields = {"layer": str(tr.layer), "target": tr.target, "was": str(tr.old), "reason": tr.reason}
    if tr.new is Health.UP:
        _logger().info(event, **fields)
    else:
        _logger().warning(event, **fields)
