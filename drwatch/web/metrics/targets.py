"""Per-target series (`drwatch_target_up`, `drwatch_targets`, `drwatch_canary_up`),
derived from the latest snapshot and replaced whole on each update."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch.model import Fleet, Health, Layer, Snapshot, TargetHealth

_INSTANCE_LAYERS = (Layer.PROVIDER, Layer.AGENT, Layer.APP)


@dataclass(frozen=True, slots=True)
class TargetRow:
    layer: str
    role: str
    region: str
    zone: str
    target: str
    up: bool


def target_row(th: TargetHealth, fleet: Fleet) -> TargetRow | None:
    """One `drwatch_target_up` row, or None when the health is unknown or the target is a
    canary (its own series) or an instance no longer in the fleet."""
    if th.health is Health.UNKNOWN or th.layer is Layer.CANARY:
        return None
    layer, up = th.layer.value, th.health is Health.UP
    if th.layer in _INSTANCE_LAYERS:
        inst = fleet.get(th.target)
        if inst is None:
            return None
        # The instance's name, not its id: names survive replacement and read well.
        return TargetRow(layer, inst.role.value, inst.region, inst.zone, inst.name, up)
    if th.layer is Layer.ZONE:
        region = next((i.region for i in fleet.in_zone(th.target)), "")
        return TargetRow(layer, "", region, th.target, th.target, up)
    if th.layer is Layer.API:
        return TargetRow(layer, "", th.target, "", th.target, up)
    group = fleet.in_group(th.target)
    role = group[0].role.value if group else ""
    region = group[0].region if group else ""
    return TargetRow(layer, role, region, "", th.target, up)


class SnapshotCollector(Collector):
    """Per-target series derived from the latest snapshot, replaced whole on each update.

    A collector rather than labelled gauges: targets that left the fleet vanish
    from the exposition at once, without bookkeeping of which label sets to remove.
    """

    def __init__(self) -> None:
        self._rows: tuple[TargetRow, ...] = ()
        self._counts: Mapping[tuple[str, str], int] = {}
        self._canaries: Mapping[str, bool] = {}

    def update(self, snapshot: Snapshot) -> None:
        """Replace every per-target series with the snapshot's debounced health."""
        health = snapshot.health.values()
        self._rows = tuple(r for th in health if (r := target_row(th, snapshot.fleet)))
        counts: dict[tuple[str, str], int] = {}
        for th in health:
            key = (th.layer.value, th.health.value)
            counts[key] = counts.get(key, 0) + 1
        self._counts = counts
        self._canaries = {
            th.target: th.health is Health.UP
            for th in snapshot.layer(Layer.CANARY)
            if th.health is not Health.UNKNOWN
        }

    def collect(self) -> Iterable[Metric]:
        yield self._up()
        yield self._targets()
        yield self._canary()

    def _up(self) -> Metric:
        up = GaugeMetricFamily(
            "drwatch_target_up",
            "1 if the target is healthy on this layer after hysteresis, 0 if down; "
            "targets whose health is unknown are absent (see drwatch_targets).",
            labels=["layer", "role", "region", "zone", "target"],
        )
        for r in self._rows:
            up.add_metric([r.layer, r.role, r.region, r.zone, r.target], 1.0 if r.up else 0.0)
        return up

    def _targets(self) -> Metric:
        targets = GaugeMetricFamily(
            "drwatch_targets",
            "Targets by layer and debounced health (up, down, unknown).",
            labels=["layer", "health"],
        )
        for (layer, health), n in sorted(self._counts.items()):
            targets.add_metric([layer, health], float(n))
        return targets

    def _canary(self) -> Metric:
        canary = GaugeMetricFamily(
            "drwatch_canary_up",
            "1 if the canary outside every watched cloud answers, 0 if not, absent if unknown.",
            labels=["canary"],
        )
        for name, ok in sorted(self._canaries.items()):
            canary.add_metric([name], 1.0 if ok else 0.0)
        return canary

    def describe(self) -> Iterable[Metric]:
        # Describing nothing keeps the registry from calling collect() at registration.
        return ()
