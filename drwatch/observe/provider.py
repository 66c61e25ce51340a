"""The provider observer: what the cloud's API says about a region, its zones and instances.

One `poll(region, fleet, now)` lists the region's instances (with status checks) and its
zones, and returns observations keyed as docs/architecture.md says:

- `Layer.API`, target the region: did the API answer at all;
- `Layer.PROVIDER`, target each fleet instance in the region: state and status checks
  (`detail` carries `state`, `system_status`, `instance_status`);
- `Layer.ZONE`, target each zone: the provider's zone state.

How failures read (unknown is not down: we only say down when we saw it):

- answered: api up; instances and zones judged from their state (below);
- connection refused or closed: api down "region API unreachable"; instances and zones
  unknown "region API unreachable: connection failed";
- a server error (5xx, or an unparseable answer) twice in a row: api down "region API
  unreachable"; the rest unknown "region API unreachable: <code>". The first one alone
  is unknown "region API error: <code>" everywhere (one 500 is a blip, not an outage);
- a timeout (ours or botocore's): api unknown "region API timeout"; the rest unknown
  "region API unreachable: timeout" (no answer is not a refusal: we did not see it fail);
- throttled: unknown "throttled" everywhere, and polls back off;
- any other API error (auth, bad request): unknown "region API error: <code>" everywhere.

An instance: running with no impaired check is up (initializing or insufficient-data
checks do not make it down: AWS reports those for minutes after every launch); running
with an impaired check is down "status impaired"; stopping, stopped, shutting-down and
terminated are down with the state as reason; pending is unknown "pending"; an instance
the provider no longer lists is down "not found at provider". A zone is up when
`available` (or `information`, `constrained`), down "zone impaired"/"zone unavailable".

Throttling: `next_poll_delay(region)` grows (with jitter) on every throttled poll and
falls back to 0 after the next answered one; the scheduler waits at least that long.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from drwatch.errors import (
    ProviderError,
    ProviderThrottledError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from drwatch.logs import get_logger
from drwatch.model.fleet import Fleet, InstanceState
from drwatch.model.observation import Health, Layer, Observation
from drwatch.providers.base import CloudInstance, Inventory, StatusCheck, ZoneInfo


def _log() -> Any:
    # Bound at use, not import: a logger bound before logs.configure() keeps the defaults.
    return get_logger(component="observe.provider")


API_UNREACHABLE = "region API unreachable"
# Consecutive server-side errors (5xx) before the API counts as down rather than unknown.
SERVER_ERRORS_FOR_DOWN = 2
# "constrained" limits new capacity only; running instances there are unaffected.
_UP_ZONE_STATES = frozenset({"available", "information", "constrained"})
_DOWN_ZONE_STATES = frozenset({"impaired", "unavailable"})


@dataclass(frozen=True, slots=True)
class _Failure:
    api: Health
    api_reason: str
    target_reason: str
    error: str


@dataclass
class _RegionState:
    throttled: int = 0
    delay: float = 0.0
    server_errors: int = 0
    zones: tuple[str, ...] = ()
    api: Health = Health.UNKNOWN
    ok_at: dict[tuple[str, Layer], float] = field(default_factory=dict)


class ProviderObserver:
    """Polls the provider for one region at a time. `poll` never raises."""

    def __init__(
        self,
        inventory: Inventory,
        regions: Sequence[str],
        timeout: float,
        *,
        backoff_base: float = 2.0,
        backoff_max: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        self._inventory = inventory
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._regions = {r: _RegionState() for r in regions}

    def next_poll_delay(self, region: str) -> float:
        """Seconds to wait at least before polling `region` again; 0.0 when not throttled."""
        state = self._regions.get(region)
        return state.delay if state else 0.0

    async def poll_all(self, fleet: Fleet, now: float) -> list[Observation]:
        """Poll every configured region concurrently."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.poll(r, fleet, now)) for r in self._regions]
        return [obs for t in tasks for obs in t.result()]

    async def poll(self, region: str, fleet: Fleet, now: float) -> list[Observation]:
        """Observations of the region's API, its zones and the fleet's instances in it."""
        state = self._regions.setdefault(region, _RegionState())
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                listed = await self._inventory.instances(region)
                zones = await self._inventory.zones(region)
        except Exception as err:  # the observer reports every failure, it never raises
            failure = self._classify(region, state, err)
            self._note_api(region, state, failure.api, failure.api_reason)
            return _failed(region, state, fleet, now, failure)
        latency = time.monotonic() - started
        state.throttled, state.delay, state.server_errors = 0, 0.0, 0
        state.zones = tuple(z.name for z in zones)
        self._note_api(region, state, Health.UP, "")
        return _answered(region, state, fleet, now, listed=listed, zones=zones, latency=latency)

    def _classify(self, region: str, state: _RegionState, err: Exception) -> _Failure:
        if isinstance(err, ProviderThrottledError):
            state.throttled += 1
            ceiling = min(self._backoff_max, self._backoff_base * 2 ** (state.throttled - 1))
            state.delay = ceiling * self._rng.uniform(0.5, 1.0)
            return _Failure(Health.UNKNOWN, "throttled", "throttled", str(err))
        if isinstance(err, ProviderTimeoutError | TimeoutError):
            msg = str(err) or f"no answer within {self._timeout:g}s"
            return _Failure(
                Health.UNKNOWN, "region API timeout", f"{API_UNREACHABLE}: timeout", msg
            )
        if isinstance(err, ProviderUnreachableError):
            target = f"{API_UNREACHABLE}: connection failed"
            return _Failure(Health.DOWN, API_UNREACHABLE, target, str(err))
        if isinstance(err, ProviderError):
            return _api_error(state, err)
        _log().error("provider.observer_failed", region=region, exc_info=err)
        reason = f"observer error: {type(err).__name__}"
        return _Failure(Health.UNKNOWN, reason, reason, str(err))

    def _note_api(self, region: str, state: _RegionState, health: Health, reason: str) -> None:
        """Log the region API's transitions only, never its repeats."""
        if health is not state.api:
            _log().info("provider.api_changed", region=region, health=health.value, reason=reason)
            state.api = health


def _api_error(state: _RegionState, err: ProviderError) -> _Failure:
    code = err.code or "error"
    if not err.retryable:
        return _Failure(
            Health.UNKNOWN, f"region API error: {code}", f"region API error: {code}", str(err)
        )
    state.server_errors += 1
    if state.server_errors >= SERVER_ERRORS_FOR_DOWN:
        return _Failure(Health.DOWN, API_UNREACHABLE, f"{API_UNREACHABLE}: {code}", str(err))
    reason = f"region API error: {code}"
    return _Failure(Health.UNKNOWN, reason, reason, str(err))


def _observation(
    state: _RegionState,
    target: str,
    layer: Layer,
    health: Health,
    now: float,
    *,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    latency: float | None = None,
) -> Observation:
    if health is Health.UP:
        state.ok_at[(target, layer)] = now
    return Observation(
        target=target,
        layer=layer,
        health=health,
        attempted_at=now,
        ok_at=state.ok_at.get((target, layer)),
        reason=reason,
        latency_s=latency,
        detail=MappingProxyType(detail or {}),
    )


def _prune(state: _RegionState, fleet: Fleet, region: str) -> None:
    """Forget last-ok times of instances and zones no longer watched."""
    keep = {i.id for i in fleet.in_region(region)} | set(state.zones) | {region}
    state.ok_at = {k: v for k, v in state.ok_at.items() if k[0] in keep}


def _answered(
    region: str,
    state: _RegionState,
    fleet: Fleet,
    now: float,
    *,
    listed: list[CloudInstance],
    zones: list[ZoneInfo],
    latency: float,
) -> list[Observation]:
    _prune(state, fleet, region)
    out = [_observation(state, region, Layer.API, Health.UP, now, latency=latency)]
    by_id = {c.id: c for c in listed}
    for inst in fleet.in_region(region):
        cloud = by_id.get(inst.id)
        health, reason = judge_instance(cloud)
        out.append(
            _observation(
                state, inst.id, Layer.PROVIDER, health, now, reason=reason, detail=_detail(cloud)
            )
        )
    for zone in zones:
        health, reason = judge_zone(zone.state)
        out.append(
            _observation(
                state,
                zone.name,
                Layer.ZONE,
                health,
                now,
                reason=reason,
                detail={"state": zone.state},
            )
        )
    return out


def _failed(
    region: str, state: _RegionState, fleet: Fleet, now: float, failure: _Failure
) -> list[Observation]:
    detail = {"error": failure.error}
    out = [
        _observation(
            state, region, Layer.API, failure.api, now, reason=failure.api_reason, detail=detail
        )
    ]
    for inst in fleet.in_region(region):
        out.append(
            _observation(
                state, inst.id, Layer.PROVIDER, Health.UNKNOWN, now, reason=failure.target_reason
            )
        )
    for zone in sorted(set(state.zones) | _zones(fleet, region)):
        out.append(
            _observation(state, zone, Layer.ZONE, Health.UNKNOWN, now, reason=failure.target_reason)
        )
    return out


def _zones(fleet: Fleet, region: str) -> set[str]:
    return {i.zone for i in fleet.in_region(region)}


def judge_instance(cloud: CloudInstance | None) -> tuple[Health, str]:
    """The provider's verdict on one instance, with a short reason when not up."""
    if cloud is None:
        return Health.DOWN, "not found at provider"
    if cloud.state is InstanceState.RUNNING:
        checks = (cloud.system_status, cloud.instance_status)
        if StatusCheck.IMPAIRED in checks:
            return Health.DOWN, "status impaired"
        return Health.UP, ""
    if cloud.state is InstanceState.PENDING:
        return Health.UNKNOWN, "pending"
    if cloud.state is InstanceState.UNKNOWN:
        return Health.UNKNOWN, "state unknown"
    return Health.DOWN, cloud.state.value


def judge_zone(state: str) -> tuple[Health, str]:
    if state in _UP_ZONE_STATES:
        return Health.UP, ""
    if state in _DOWN_ZONE_STATES:
        return Health.DOWN, f"zone {state}"
    return Health.UNKNOWN, f"zone state {state!r}"


def _detail(cloud: CloudInstance | None) -> dict[str, Any]:
    if cloud is None:
        return {"state": "not-found"}
    return {
        "state": cloud.state.value,
        "system_status": cloud.system_status.value,
        "instance_status": cloud.instance_status.value,
        "zone": cloud.zone,
    }
