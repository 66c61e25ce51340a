"""Observations (one check's raw result) and target health (after hysteresis).

Times are epoch seconds (float). A timeout is `unknown`, never `down`: we did not see
the target fail, we failed to see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})


class Layer(StrEnum):
    """What an observation looked at. Targets per layer:

    - provider: an instance id (the cloud's view of it: state and status checks)
    - agent:    an instance id (drwatch agent on the host)
    - app:      an instance id (the application's health endpoint on that host)
    - service:  a load-balancer group name (the app through its public address)
    - zone:     a zone name (the provider's zone state)
    - api:      a region name (does the region's API answer at all)
    - canary:   a canary name (an endpoint outside every watched cloud)
    """

    PROVIDER = "provider"
    AGENT = "agent"
    APP = "app"
    SERVICE = "service"
    ZONE = "zone"
    API = "api"
    CANARY = "canary"


class Health(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Observation:
    """One check's result. `ok_at` is the last time this target/layer was seen healthy."""

    target: str
    layer: Layer
    health: Health
    attempted_at: float
    ok_at: float | None = None
    reason: str = ""
    latency_s: float | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """Health of one target on one layer after rise/fall hysteresis.

    `health` is the debounced verdict; `last` is the latest raw observation's health.
    `since` is when `health` took its current value. `detail` is the latest
    observation's detail (agent facts, provider state) for rules that need it.
    """

    target: str
    layer: Layer
    health: Health
    since: float
    attempted_at: float | None
    ok_at: float | None
    last: Health = Health.UNKNOWN
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def stale(self, now: float, max_age: float) -> bool:
        """No attempt finished within `max_age` seconds: what we hold says nothing of now."""
        return self.attempted_at is None or now - self.attempted_at > max_age
