"""Read-only views over a snapshot: what each layer says *now*, staleness applied.

Vocabulary used by the rules:
- answering: fresh and UP;
- failing:   fresh and DOWN (we saw it fail: refused, 500, stopped);
- silent:    fresh and not UP (failing, or tried and got no answer: a timeout);
- unknown:   no observation, or the latest one is older than the layer's max_age.
Unknown is never down; silence alone never makes an instance dead (only zone and
region corroboration, across many targets and layers, may count it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from drwatch.config import PolicyConfig, TimingConfig
from drwatch.model.fleet import Fleet, Instance, InstanceState
from drwatch.model.observation import Health, Layer, TargetHealth
from drwatch.model.snapshot import Snapshot

RETIRED_TAG = "drwatch:retired"
IMPAIRED_ZONE_STATES = frozenset({"impaired", "unavailable"})
# The provider no longer lists the instance: as good as terminated.
GONE_FROM_PROVIDER = frozenset({"not-found", "not_found"})
# An API that says "slow down" is answering: throttling is not an outage.
THROTTLED = "throttl"


class Seen(StrEnum):
    UP = "up"
    DOWN = "down"
    SILENT = "silent"  # tried, no answer (unknown with a fresh attempt)
    UNKNOWN = "unknown"  # stale or never observed


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The thresholds the rules need; built from the policy and timing slices."""

    dead_grace: float = 30.0
    # For an instance whose silence a quorum of watchers corroborates (never above
    # dead_grace).
    corroborated_grace: float = 10.0
    zone_down_share: float = 0.75
    disk_warn_percent: float = 90.0
    memory_warn_percent: float = 95.0
    boot_grace: float = 300.0
    max_age: Mapping[Layer, float] = field(default_factory=dict)
    default_max_age: float = 30.0

    @classmethod
    def from_config(cls, policy: PolicyConfig, timing: TimingConfig) -> RulesConfig:
        ages = {
            Layer.PROVIDER: timing.provider.max_age,
            Layer.ZONE: timing.provider.max_age,
            Layer.API: timing.provider.max_age,
            Layer.AGENT: timing.agent.max_age,
            Layer.APP: timing.app.max_age,
            Layer.SERVICE: timing.app.max_age,
            Layer.CANARY: timing.canary.max_age,
        }
        return cls(
            dead_grace=policy.dead_grace,
            corroborated_grace=policy.corroborated_grace,
            zone_down_share=policy.zone_down_share,
            disk_warn_percent=policy.disk_warn_percent,
            memory_warn_percent=policy.memory_warn_percent,
            boot_grace=policy.boot_grace,
            max_age=ages,
        )

    def age_limit(self, layer: Layer) -> float:
        return self.max_age.get(layer, self.default_max_age)


@dataclass(frozen=True, slots=True)
class LayerView:
    seen: Seen
    since: float | None = None
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    # Up (after hysteresis) at least once: see `_was_up`.
    ever_up: bool = False

    @property
    def answering(self) -> bool:
        return self.seen is Seen.UP

    @property
    def failing(self) -> bool:
        return self.seen is Seen.DOWN

    @property
    def silent(self) -> bool:
        return self.seen in (Seen.DOWN, Seen.SILENT)


UNSEEN = LayerView(Seen.UNKNOWN)


def view(th: TargetHealth | None, now: float, cfg: RulesConfig) -> LayerView:
    """What one (target, layer) says now. Stale is unknown, whatever it said before."""
    if th is None or th.stale(now, cfg.age_limit(th.layer)):
        return UNSEEN
    seen = {Health.UP: Seen.UP, Health.DOWN: Seen.DOWN}.get(th.health, Seen.SILENT)
    if seen is Seen.SILENT and (th.last is Health.UP or THROTTLED in th.reason.lower()):
        # Debounced unknown but the latest attempt answered (not risen yet), or the API
        # asked us to slow down: neither is silence.
        seen = Seen.UNKNOWN
    return LayerView(seen, th.since, th.reason, th.detail, ever_up=_was_up(th))


def _was_up(th: TargetHealth) -> bool:
    """Has this target/layer been up after hysteresis at least once? Up now, or its last
    success came before its current state began (it was answering, then went down). One
    raw success while still rising (`ok_at` after `since`) does not count: a booting
    host that answered once has not come up yet."""
    return th.health is Health.UP or (th.ok_at is not None and th.ok_at <= th.since)


@dataclass(frozen=True)
class InstanceView:
    """One instance, its three layers, and what the provider says of its state.
    (Derived facts are cached: the rules ask them many times per tick.)"""

    instance: Instance
    provider: LayerView
    agent: LayerView
    app: LayerView
    has_app: bool
    # Launched within the boot grace and never heard from: not yet judged.
    booting: bool = False

    @cached_property
    def state(self) -> InstanceState:
        """The provider's state from a fresh answer (`pending` arrives as an unknown health
        with its state in the detail); unknown when the provider did not answer."""
        if self.provider.seen is Seen.UNKNOWN:
            return InstanceState.UNKNOWN
        raw = str(self.provider.detail.get("state", "")).lower()
        if raw in GONE_FROM_PROVIDER:
            return InstanceState.TERMINATED
        try:
            return InstanceState(raw)
        except ValueError:
            return InstanceState.RUNNING if self.provider.answering else InstanceState.UNKNOWN

    @cached_property
    def status_impaired(self) -> bool:
        """A fresh provider answer with a status check impaired (or provider DOWN while
        the state is running: the provider itself calls the instance unhealthy)."""
        if self.provider.seen not in (Seen.UP, Seen.DOWN):
            return False
        d = self.provider.detail
        checks = (str(d.get("system_status", "")), str(d.get("instance_status", "")))
        if "impaired" in (c.lower() for c in checks):
            return True
        return self.provider.failing and not self.state.is_gone

    @cached_property
    def gone(self) -> bool:
        return self.state.is_gone

    @cached_property
    def answering(self) -> bool:
        return self.agent.answering or self.app.answering

    @cached_property
    def unreachable(self) -> bool:
        """Neither agent nor app answers, and at least one was tried and got nothing
        (a booting instance is not yet unreachable: it has not come up once)."""
        layers = (self.agent, self.app) if self.has_app else (self.agent,)
        return not self.booting and not self.answering and any(lv.silent for lv in layers)

    @cached_property
    def both_failing(self) -> bool:
        """Agent and app both seen failing (not merely silent). Without app checks the
        agent alone speaks for the host."""
        return self.agent.failing and (self.app.failing or not self.has_app)

    @cached_property
    def silent_since(self) -> float | None:
        """When the last of its layers stopped answering (the later `since`)."""
        sinces = [lv.since for lv in (self.agent, self.app) if lv.silent and lv.since is not None]
        return max(sinces) if sinces else None

    @cached_property
    def healthy(self) -> bool:
        present = [lv for lv in (self.provider, self.agent, self.app) if lv is not UNSEEN]
        return bool(present) and all(lv.answering for lv in present) and not self.gone


def is_retired(instance: Instance, retired: frozenset[str]) -> bool:
    return instance.id in retired or (instance.tag(RETIRED_TAG) or "").lower() == "true"


def instance_views(
    snapshot: Snapshot, now: float, cfg: RulesConfig, retired: frozenset[str]
) -> tuple[InstanceView, ...]:
    out = []
    for inst in snapshot.fleet:
        if is_retired(inst, retired):
            continue
        app = snapshot.get(inst.id, Layer.APP)
        agent_th = snapshot.get(inst.id, Layer.AGENT)
        agent_view = view(agent_th, now, cfg)
        app_view = view(app, now, cfg)
        fresh = _fresh(inst, now, cfg.boot_grace)
        if fresh:
            # Up before this (re)start does not count: a host started again after a stop
            # boots like a new one.
            agent_view = replace(agent_view, ever_up=_up_since(agent_th, inst.launched_at))
            app_view = replace(app_view, ever_up=_up_since(app, inst.launched_at))
        out.append(
            InstanceView(
                instance=inst,
                provider=view(snapshot.get(inst.id, Layer.PROVIDER), now, cfg),
                agent=_not_started(agent_view) if fresh else agent_view,
                app=_not_started(app_view) if fresh else app_view,
                has_app=app is not None,
                booting=fresh and not (agent_view.ever_up or app_view.ever_up),
            )
        )
    return tuple(out)


def _up_since(th: TargetHealth | None, launched_at: float | None) -> bool:
    """Up (after hysteresis) at some point since `launched_at`."""
    if th is None or not _was_up(th):
        return False
    return th.health is Health.UP or launched_at is None or (th.ok_at or 0.0) >= launched_at


def _fresh(inst: Instance, now: float, grace: float) -> bool:
    """Launched less than the boot grace ago."""
    return inst.launched_at is not None and now - inst.launched_at < grace


def _not_started(lv: LayerView) -> LayerView:
    """On a freshly launched instance, a layer that has never answered has not started
    yet (the agent and the app come up at their own moments during boot): unknown, not
    failing. Once it has answered, it is judged like any other."""
    if lv.ever_up or lv.seen is Seen.UNKNOWN:
        return lv
    return replace(lv, seen=Seen.UNKNOWN, reason=f"not started since launch ({lv.reason})")


class BootWatch:
    """Remembers when the provider reported an instance running again after it was stopped
    (or pending), and gives the snapshot's instance that start as its `launched_at`, as
    EC2's LaunchTime does: a host started again boots like a new one and gets the boot
    grace, so a slow boot after a restart is not taken for a dead host. (The only state
    kept between ticks; lost on restart, when nothing seen before it could count anyway.)"""

    def __init__(self) -> None:
        self._states: dict[str, InstanceState] = {}
        self._started: dict[str, float] = {}

    def apply(self, snapshot: Snapshot) -> Snapshot:
        changed = False
        fleet = []
        for inst in snapshot.fleet:
            started = self._observe(inst, snapshot)
            again = started is not None and (inst.launched_at or 0.0) < started
            fleet.append(replace(inst, launched_at=started) if again else inst)
            changed = changed or again
        self._forget(snapshot)
        if not changed:
            return snapshot
        return replace(snapshot, fleet=Fleet(tuple(fleet), snapshot.fleet.discovered_at))

    def _observe(self, inst: Instance, snapshot: Snapshot) -> float | None:
        th = snapshot.get(inst.id, Layer.PROVIDER)
        raw = str(th.detail.get("state", "")).lower() if th is not None else ""
        state = InstanceState(raw) if raw in _STATES else None
        if th is not None and state is not None:
            before = self._states.get(inst.id)
            if state is InstanceState.RUNNING and before in _BEFORE_BOOT:
                self._started[inst.id] = th.since
            self._states[inst.id] = state
        return self._started.get(inst.id)

    def _forget(self, snapshot: Snapshot) -> None:
        for gone in set(self._states) - {i.id for i in snapshot.fleet}:
            self._states.pop(gone, None)
            self._started.pop(gone, None)


_STATES = frozenset(s.value for s in InstanceState)
_BEFORE_BOOT = frozenset({InstanceState.STOPPED, InstanceState.STOPPING, InstanceState.PENDING})


def named_views(
    snapshot: Snapshot, layer: Layer, now: float, cfg: RulesConfig
) -> dict[str, LayerView]:
    """Views of a non-instance layer (zone, api, canary, service) by target name."""
    return {th.target: view(th, now, cfg) for th in snapshot.layer(layer)}


def zone_impaired(lv: LayerView) -> bool:
    """The provider reports the zone impaired (its state, or the zone layer DOWN)."""
    if lv.seen not in (Seen.UP, Seen.DOWN):
        return False
    state = str(lv.detail.get("state", "")).lower()
    return state in IMPAIRED_ZONE_STATES or lv.failing
