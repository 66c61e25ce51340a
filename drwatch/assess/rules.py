"""The rules table: named functions from a context to diagnoses.

Each rule looks at one kind of evidence and says what it means; `assess` runs them all
and then lets wider scopes absorb narrower ones. Evidence asserted by the provider
(stopped, terminated, status checks impaired, zone impaired) counts at once; evidence
that is only silence or failure seen from here counts after `dead_grace`, measured from
when it began (the health's `since`), so that drwatch's own network has time to show
up in the canaries first (orchestrator's DeadMaster vs UnreachableMaster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drwatch.assess.regions import UNKNOWN_ROLES
from drwatch.assess.views import (
    InstanceView,
    LayerView,
    RulesConfig,
)
from drwatch.model.findings import Diagnosis, Finding, scope_key
from drwatch.model.fleet import InstanceState
from drwatch.model.plan import Scope
from drwatch.model.regions import RegionRoles
from drwatch.model.snapshot import Discovery


@dataclass(frozen=True, slots=True)
class Context:
    now: float
    cfg: RulesConfig
    instances: tuple[InstanceView, ...]
    zones: Mapping[str, LayerView]
    apis: Mapping[str, LayerView]
    canaries: Mapping[str, LayerView]
    # Which region serves: losing a standby region is DR capacity lost, not an outage.
    regions: RegionRoles = field(default=UNKNOWN_ROLES)
    discovery: Discovery = field(default_factory=Discovery)
    fleet_groups: frozenset[str] = frozenset()
    # Instances whose silence a vantage quorum of watchers corroborates (Snapshot).
    corroborated: frozenset[str] = frozenset()

    @property
    def trusted_since(self) -> float | None:
        """Since when drwatch has continuously seen the outside world: the longest-up
        canary's `since`. None without canaries (nothing to go by). With canaries of which
        none answers yet (still rising after an uplink heals, or never seen), `now`:
        nothing seen from here has lasted, so no silence or failure matures."""
        if not self.canaries:
            return None
        ups = [c.since for c in self.canaries.values() if c.answering and c.since is not None]
        return min(ups) if ups else self.now

    def _start(self, since: float) -> float:
        # Silence that began while drwatch itself was cut off counts only from when it
        # could see again: right after an uplink heals, targets still look silent.
        trusted = self.trusted_since
        return since if trusted is None else max(since, trusted)

    def grace(self, corroborated: bool = False) -> float:
        """The dead grace; the shorter corroborated grace for silence a quorum of watchers
        sees (other vantage points stand for the canaries' word on drwatch's own path)."""
        if corroborated:
            return min(self.cfg.corroborated_grace, self.cfg.dead_grace)
        return self.cfg.dead_grace

    def matured(self, since: float | None, *, corroborated: bool = False) -> bool:
        """Has this evidence lasted the dead grace? Without a `since` it has not."""
        return since is not None and self.now - self._start(since) >= self.grace(corroborated)

    def in_zone(self, zone: str) -> tuple[InstanceView, ...]:
        return tuple(v for v in self.instances if v.instance.zone == zone)

    def in_region(self, region: str) -> tuple[InstanceView, ...]:
        return tuple(v for v in self.instances if v.instance.region == region)

    def left(self, since: float | None, *, corroborated: bool = False) -> str:
        if since is None:
            return ""
        left = self.grace(corroborated) - (self.now - self._start(since))
        return f", {max(0.0, left):.0f} s of grace left"


Rule = Callable[[Context], Iterable[Diagnosis]]


def _about(v: InstanceView, finding: Finding, evidence: str, since: float | None) -> Diagnosis:
    i = v.instance
    return Diagnosis(
        finding=finding,
        key=scope_key(Scope.INSTANCE, i.id),
        region=i.region,
        zone=i.zone,
        roles=(i.role,),
        groups=(i.group,),
        targets=(i.id,),
        evidence=f"{i.name}: {evidence}",
        since=since,
    )


def _layers(v: InstanceView) -> str:
    return f"agent {v.agent.seen.value}, app {v.app.seen.value if v.has_app else 'unchecked'}"


def rule_instance_gone(ctx: Context) -> Iterable[Diagnosis]:
    """Stopped or terminated at the provider: dead, whatever else answers."""
    for v in ctx.instances:
        state = v.state
        if state in (InstanceState.STOPPED, InstanceState.STOPPING):
            yield _about(
                v, Finding.INSTANCE_STOPPED, f"provider says {state.value}", v.provider.since
            )
        elif state in (InstanceState.TERMINATED, InstanceState.SHUTTING_DOWN):
            yield _about(
                v, Finding.INSTANCE_TERMINATED, f"provider says {state.value}", v.provider.since
            )


def rule_instance_impaired(ctx: Context) -> Iterable[Diagnosis]:
    """Status checks impaired: dead when nothing on the host answers, a warning otherwise."""
    for v in ctx.instances:
        if v.gone or not v.status_impaired:
            continue
        evidence = f"provider status checks impaired; {_layers(v)}"
        finding = Finding.STATUS_CHECK_IMPAIRED if v.answering else Finding.INSTANCE_IMPAIRED
        yield _about(v, finding, evidence, v.provider.since)


def rule_instance_unreachable(ctx: Context) -> Iterable[Diagnosis]:
    """Running at the provider, agent and app both down: dead after the dead grace.
    Silence (timeouts) or an unknown provider only makes it a suspect."""
    for v in ctx.instances:
        if v.gone or v.status_impaired or not v.unreachable:
            continue
        since = v.silent_since
        running = v.state is InstanceState.RUNNING
        quorum = v.instance.id in ctx.corroborated
        if running and v.both_failing and ctx.matured(since, corroborated=quorum):
            yield _about(
                v, Finding.INSTANCE_UNREACHABLE, f"running at the provider; {_layers(v)}", since
            )
            continue
        why = "provider running" if running else f"provider {v.provider.seen.value}"
        left = ctx.left(since, corroborated=quorum)
        yield _about(v, Finding.INSTANCE_SUSPECT, f"{_layers(v)}; {why}{left}", since)


def rule_instance_booting(ctx: Context) -> Iterable[Diagnosis]:
    """Launched within the boot grace and never heard from: a warning, never a finding
    that acts (a replacement still booting must not be taken for a lost instance)."""
    for v in ctx.instances:
        if not v.booting or v.gone or v.answering:
            continue
        launched = v.instance.launched_at or ctx.now
        left = ctx.cfg.boot_grace - (ctx.now - launched)
        evidence = f"booting: launched {ctx.now - launched:.0f} s ago, not answered yet, "
        yield _about(
            v,
            Finding.INSTANCE_SUSPECT,
            evidence + f"{max(0.0, left):.0f} s of boot grace left",
            launched,
        )


def rule_app_failed(ctx: Context) -> Iterable[Diagnosis]:
    """The host's agent answers but its application is down: replace after the grace."""
    for v in ctx.instances:
        if v.gone or not v.has_app or not (v.agent.answering and v.app.failing):
            continue
        reason = f"agent up, app down ({v.app.reason or 'failing'})"
        if ctx.matured(v.app.since):
            yield _about(v, Finding.APP_FAILED, reason, v.app.since)
        else:
            yield _about(v, Finding.INSTANCE_SUSPECT, reason + ctx.left(v.app.since), v.app.since)


def rule_app_unresponsive(ctx: Context) -> Iterable[Diagnosis]:
    """The host's agent answers promptly but its application times out. A timeout alone
    is unknown, never down; the agent on the same host corroborates that the network
    path and the host are fine, so the application itself is stuck (or overloaded).
    That is worth a page after the grace, but not a replacement."""
    for v in ctx.instances:
        if v.gone or not v.has_app or not v.agent.answering:
            continue
        if not v.app.silent or v.app.failing:
            continue
        reason = f"agent up, app not answering ({v.app.reason or 'timeout'})"
        if ctx.matured(v.app.since):
            yield _about(v, Finding.APP_UNRESPONSIVE, reason, v.app.since)
        else:
            yield _about(v, Finding.INSTANCE_SUSPECT, reason + ctx.left(v.app.since), v.app.since)


def rule_agent_down(ctx: Context) -> Iterable[Diagnosis]:
    """Agent silent while the app answers and the host runs: degraded, never dead."""
    for v in ctx.instances:
        if v.gone or v.status_impaired or not (v.agent.silent and v.app.answering):
            continue
        reason = f"agent {v.agent.seen.value} ({v.agent.reason or 'no answer'}), app up"
        if ctx.matured(v.agent.since):
            yield _about(v, Finding.AGENT_DOWN, reason, v.agent.since)
        else:
            yield _about(
                v, Finding.INSTANCE_SUSPECT, reason + ctx.left(v.agent.since), v.agent.since
            )


def rule_capacity(ctx: Context) -> Iterable[Diagnosis]:
    """Disk and memory warnings from the agent's facts; missing keys say nothing."""
    for v in ctx.instances:
        if not v.agent.answering:
            continue
        disk = _disk_pressure(v.agent.detail, ctx.cfg.disk_warn_percent)
        if disk:
            yield _about(v, Finding.CAPACITY_DISK, disk, v.agent.since)
        mem = _memory_pressure(v.agent.detail, ctx.cfg.memory_warn_percent)
        if mem:
            yield _about(v, Finding.CAPACITY_MEMORY, mem, v.agent.since)


_LEVEL_KEYS = ("level", "status", "state", "severity")
_PERCENT_KEYS = ("percent", "used_percent", "usage_percent", "pct")
_BAD_LEVELS = frozenset({"warning", "warn", "critical", "crit"})


def _level(fact: Mapping[str, Any], threshold: float) -> tuple[str, float | None] | None:
    """A fact's own warning level if it gives one, else its percentage against threshold."""
    pct = next((fact[k] for k in _PERCENT_KEYS if isinstance(fact.get(k), int | float)), None)
    level = next((str(fact[k]).lower() for k in _LEVEL_KEYS if k in fact), None)
    if level is not None:
        return (level, pct) if level in _BAD_LEVELS else None
    if pct is not None and pct >= threshold:
        return ("warning", float(pct))
    return None


def _disk_pressure(detail: Mapping[str, Any], threshold: float) -> str:
    notes = [n for n in (_disk_usage(detail, threshold), _disk_checks(detail)) if n]
    return "; ".join(notes)


def _disk_checks(detail: Mapping[str, Any]) -> str:
    """The agent's own `disk_free` checks at warning or critical (docs/agent.md)."""
    checks = detail.get("checks")
    if not isinstance(checks, Mapping):
        return ""
    notes = []
    for name, check in sorted(checks.items()):
        if not isinstance(check, Mapping) or check.get("kind") != "disk_free":
            continue
        status = str(check.get("status", "")).lower()
        if status in _BAD_LEVELS:
            data = check.get("data") if isinstance(check.get("data"), Mapping) else {}
            free = data.get("free_percent") if isinstance(data, Mapping) else None
            left = f" {free:.0f}% free" if isinstance(free, int | float) else ""
            notes.append(f"check {name}{left} ({status})")
    return "; ".join(notes)


def _disk_usage(detail: Mapping[str, Any], threshold: float) -> str:
    disks = detail.get("disks", detail.get("disk"))
    if isinstance(disks, Mapping):
        disks = [{"mount": k, **v} if isinstance(v, Mapping) else v for k, v in disks.items()]
    if not isinstance(disks, list | tuple):
        return ""
    notes = []
    for disk in disks:
        if not isinstance(disk, Mapping):
            continue
        hit = _level(disk, threshold)
        if hit:
            pct = f" {hit[1]:.0f}%" if hit[1] is not None else ""
            notes.append(f"disk {disk.get('mount', disk.get('path', '?'))}{pct} ({hit[0]})")
    return "; ".join(notes)


def _memory_pressure(detail: Mapping[str, Any], threshold: float) -> str:
    mem = detail.get("memory", detail.get("mem"))
    if not isinstance(mem, Mapping):
        return ""
    hit = _level(mem, threshold)
    if not hit:
        return ""
    pct = f" {hit[1]:.0f}%" if hit[1] is not None else ""
    return f"memory{pct} used ({hit[0]})"
