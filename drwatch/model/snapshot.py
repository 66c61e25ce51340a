"""A frozen picture of the fleet and its health, the only input to assess."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from drwatch.model.fleet import Fleet
from drwatch.model.observation import Layer, TargetHealth

HealthKey = tuple[str, Layer]


@dataclass(frozen=True, slots=True)
class Discovery:
    """What discovery said last: the regions it could not list (with why), and the
    groups the config expects to find. A watcher that finds nothing must say so."""

    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    expected_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Fleet plus per-(target, layer) health, taken at `taken_at` (epoch seconds)."""

    taken_at: float
    fleet: Fleet
    health: Mapping[HealthKey, TargetHealth] = field(default_factory=lambda: MappingProxyType({}))
    discovery: Discovery = field(default_factory=Discovery)
    # Instance ids whose silence a vantage quorum of two or more watchers sees (several
    # watchers on etcd: drwatch.cluster.corroborate); they count after the shorter
    # `policy.corroborated_grace`. Always empty for a single watcher.
    corroborated: frozenset[str] = frozenset()

    def get(self, target: str, layer: Layer) -> TargetHealth | None:
        return self.health.get((target, layer))

    def layer(self, layer: Layer) -> tuple[TargetHealth, ...]:
        return tuple(h for (_, lyr), h in self.health.items() if lyr is layer)
