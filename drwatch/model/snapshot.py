"""A frozen picture of the fleet and its health, the only input to assess."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from drwatch.model.fleet import Fleet
from drwatch.model.observation import Layer, TargetHealth

HealthKey = tuple[str, Layer]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Fleet plus per-(target, layer) health, taken at `taken_at` (epoch seconds)."""

    taken_at: float
    fleet: Fleet
    health: Mapping[HealthKey, TargetHealth] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, target: str, layer: Layer) -> TargetHealth | None:
        return self.health.get((target, layer))

    def layer(self, layer: Layer) -> tuple[TargetHealth, ...]:
        return tuple(h for (_, lyr), h in self.health.items() if lyr is layer)
