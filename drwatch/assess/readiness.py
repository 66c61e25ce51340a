"""Readiness, pure: could the service survive losing a zone, or its region, right now?

The observed fleet in (the snapshot, the database roles remembered, which region serves,
the machine images seen in each region, the config's objectives and residency rules),
warnings out. Each rule is stated once, as a function returning its diagnoses, each
with the reason in words; `READINESS_RULES` lists them. They are warnings: they open no
incident and start no playbook. The daemon runs them beside the tick (with the trend
warnings) and shows them in the status's `findings`, the metrics and the status page.

Health here is three-valued, as everywhere in drwatch: a member is *ready* when its
application (or, with no application check, its agent) answers; *down* when the
provider says it is gone or agent and app both fail (refused, an error: a timeout alone
is silence, not failure); otherwise *unknown*,
and a rule that would need an unknown member to decide says nothing yet. A member launched
within the boot grace that has not answered yet (a replacement on its way) is not ready:
the gap shows until it answers.

`residency_refusal` is the check region.failover makes before it moves anything.

"The DNS records do not match the serving region" reads the serving-region model
(`drwatch.model.regions`), which folds the public name's records and the primary
database; without a `[dns]` section there are no records and it says nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from drwatch.assess.regions import UNKNOWN_ROLES, standby_regions
from drwatch.assess.views import RulesConfig, is_retired, view
from drwatch.config import Config
from drwatch.model.findings import Diagnosis, Finding, scope_key
from drwatch.model.fleet import Instance, Role
from drwatch.model.images import ImageRef
from drwatch.model.observation import Layer
from drwatch.model.plan import Scope
from drwatch.model.regions import RegionRoles
from drwatch.model.snapshot import Snapshot
from drwatch.roles import database_check, role_of
from drwatch.units import format_duration

ROLE_TAG = "drwatch:role"
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ReadinessConfig:
    """The slices of the config the rules read. `rpo` is per database group (its data
    class's RPO, else the overall one); `residency` is data class -> allowed regions."""

    default_rpo: float = 900.0
    rpo: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    residency: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)
    group_tag: str = "drwatch:group"

    @classmethod
    def from_config(cls, cfg: Config) -> ReadinessConfig:
        classes = cfg.objectives.data_classes
        rpo = {
            g.name: classes[g.data_class].rpo
            for g in cfg.groups
            if g.data_class and g.data_class in classes
        }
        return cls(
            default_rpo=cfg.objectives.rpo,
            rpo=MappingProxyType(rpo),
            residency=MappingProxyType({k: tuple(v) for k, v in cfg.residency.items()}),
            group_tag=cfg.provider.group_tag,
        )

    def rpo_of(self, group: str) -> float:
        return self.rpo.get(group, self.default_rpo)


@dataclass(frozen=True, slots=True)
class ReadinessInput:
    """Everything the rules look at. `images`: per region, the images seen there; a
    region missing from it has not been listed (yet, or its listing failed): unknown."""

    snapshot: Snapshot
    now: float
    rules: RulesConfig
    regions: RegionRoles
    cfg: ReadinessConfig = field(default_factory=ReadinessConfig)
    images: Mapping[str, tuple[ImageRef, ...]] = field(default_factory=lambda: _EMPTY)
    remembered: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    retired: frozenset[str] = frozenset()

    def members(self, role: Role | None = None) -> list[Instance]:
        return [
            i
            for i in self.snapshot.fleet
            if not is_retired(i, self.retired) and (role is None or i.role is role)
        ]

    def state(self, inst: Instance) -> Ready:
        """ready | down | unknown (module docstring)."""
        snap, now = self.snapshot, self.now
        if self.gone(inst):
            return Ready.DOWN
        app_th = snap.get(inst.id, Layer.APP)
        agent = view(snap.get(inst.id, Layer.AGENT), now, self.rules)
        app = view(app_th, now, self.rules)
        if app.answering or (app_th is None and agent.answering):
            return Ready.READY
        if self._booting(inst):
            return Ready.DOWN  # launched, never answered yet: not ready until it does
        if agent.failing and (app.failing or app_th is None):
            return Ready.DOWN  # refused or failing; a timeout alone stays unknown
        return Ready.UNKNOWN

    def gone(self, inst: Instance) -> bool:
        """Stopped or terminated, as discovery or the provider's latest word says."""
        provider = view(self.snapshot.get(inst.id, Layer.PROVIDER), self.now, self.rules)
        return inst.state.is_gone or _gone_by_provider(provider.detail)

    def _booting(self, inst: Instance) -> bool:
        launched = inst.launched_at
        return launched is not None and self.now - launched < self.rules.boot_grace

    def db_role(self, inst: Instance) -> str:
        return role_of(inst, self.snapshot, self.remembered)[0]


class Ready(StrEnum):
    READY = "ready"
    DOWN = "down"
    UNKNOWN = "unknown"


def _gone_by_provider(detail: Mapping[str, Any]) -> bool:
    return str(detail.get("state", "")) in ("stopped", "stopping", "terminated", "shutting-down")


__all__ = [
    "READINESS_RULES",
    "ImageRef",
    "ReadinessConfig",
    "ReadinessInput",
    "ReadinessReport",
    "assess_readiness",
    "residency_refusal",
]

ReadinessRule = Callable[[ReadinessInput], Iterable[Diagnosis]]


def _warn(
    finding: Finding,
    region: str,
    evidence: str,
    *,
    targets: Iterable[Instance] = (),
    groups: Iterable[str] = (),
    zone: str = "",
    facts: Mapping[str, str] | None = None,
) -> Diagnosis:
    ts = sorted(targets, key=lambda i: i.id)
    scope = finding.scope
    return Diagnosis(
        finding=finding,
        key=scope_key(scope, zone if scope is Scope.ZONE else region),
        region=region,
        zone=zone,
        roles=tuple(sorted({i.role for i in ts})),
        groups=tuple(sorted(set(groups) | {i.group for i in ts})),
        targets=tuple(i.id for i in ts),
        evidence=evidence,
        facts=tuple(sorted((facts or {}).items())),
    )


def _names(insts: Iterable[Instance]) -> str:
    return ", ".join(sorted(i.name or i.id for i in insts)) or "none"


# -- the rules -------------------------------------------------------------------------


def rule_group_single_zone(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """A group of two or more whose members (not stopped or terminated) all run in one
    zone: one zone outage takes the whole group. (A group of one has no second member to
    place elsewhere.)"""
    by_group: dict[str, list[Instance]] = {}
    for inst in inp.members():
        if not inp.gone(inst):  # where members are placed, answering or not yet
            by_group.setdefault(inst.group, []).append(inst)
    for group, members in sorted(by_group.items()):
        zones = {i.zone for i in members}
        if len(members) < 2 or len(zones) != 1:
            continue
        (zone,) = zones
        note = f"group {group}: all {len(members)} members ({_names(members)}) run in {zone}"
        yield _warn(
            Finding.GROUP_SINGLE_ZONE,
            members[0].region,
            note,
            targets=members,
            zone=zone,
            facts={"group": group},
        )


def rule_lb_standby(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """The serving region needs healthy load balancers in two zones (the active one and a
    standby the Elastic IP can move to); each standby region needs one that answers, or
    region.failover has nowhere to send the traffic."""
    lbs = [i for i in inp.members(Role.LOAD_BALANCER)]
    if not lbs or inp.regions.serving is None:
        return
    serving = inp.regions.serving
    d = _serving_lbs(inp, serving, [i for i in lbs if i.region == serving])
    if d is not None:
        yield d
    for region in standby_regions(inp.regions):
        d = _standby_lbs(inp, region, [i for i in lbs if i.region == region])
        if d is not None:
            yield d


def _serving_lbs(inp: ReadinessInput, region: str, lbs: list[Instance]) -> Diagnosis | None:
    states = {i.id: inp.state(i) for i in lbs}
    ready_zones = {i.zone for i in lbs if states[i.id] is Ready.READY}
    if len(ready_zones) >= 2:
        return None
    unknown_zones = {i.zone for i in lbs if states[i.id] is Ready.UNKNOWN} - ready_zones
    if unknown_zones:
        return None  # a load balancer not judged yet could be the standby
    ready = [i for i in lbs if states[i.id] is Ready.READY]
    down = [i for i in lbs if states[i.id] is Ready.DOWN]
    where = f"only in {', '.join(sorted(ready_zones))} ({_names(ready)})" if ready else "none"
    note = f"{region} (serving): healthy load balancers {where}; not ready: {_names(down)}"
    return _warn(Finding.LB_STANDBY_MISSING, region, note, targets=down)


def _standby_lbs(inp: ReadinessInput, region: str, lbs: list[Instance]) -> Diagnosis | None:
    states = [inp.state(i) for i in lbs]
    if Ready.READY in states or Ready.UNKNOWN in states:
        return None
    if not lbs:
        note = f"{region} (standby region): no load balancer at all"
    else:
        note = f"{region} (standby region): no load balancer answers ({_names(lbs)} down)"
    return _warn(Finding.LB_STANDBY_MISSING, region, note, targets=lbs)


def _primaries(inp: ReadinessInput) -> list[Instance]:
    dbs = inp.members(Role.DATABASE)
    return [i for i in dbs if not i.state.is_gone and inp.db_role(i) == "primary"]


def _replicas(inp: ReadinessInput) -> list[Instance]:
    return [i for i in inp.members(Role.DATABASE) if inp.db_role(i) == "replica"]


def _db_state(inp: ReadinessInput, inst: Instance) -> Ready:
    """A replica is ready when its host is and its database check is not critical."""
    state = inp.state(inst)
    if state is not Ready.READY:
        return state
    check = database_check(inp.snapshot, inst.id)
    if check is not None and str(check.get("status", "")).lower() == "critical":
        return Ready.DOWN
    return Ready.READY


def rule_db_zone_replica(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """The primary database needs a healthy replica in another zone of its region: a zone
    outage then costs a promotion, not a restore from backup."""
    replicas = _replicas(inp)
    for primary in _primaries(inp):
        near = [r for r in replicas if r.region == primary.region and r.zone != primary.zone]
        states = [_db_state(inp, r) for r in near]
        if Ready.READY in states or Ready.UNKNOWN in states:
            continue
        why = f"its replicas there are not ready ({_names(near)})" if near else "it has none"
        note = (
            f"{primary.name} (primary, {primary.zone}): no healthy replica in another zone "
            f"of {primary.region}: {why}"
        )
        yield _warn(Finding.DB_ZONE_REPLICA_MISSING, primary.region, note, targets=near)


def rule_region_replica(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """Each standby region needs a healthy replica of the primary whose lag is within the
    RPO: it is what region.failover promotes, and its lag is the data a failover loses."""
    primaries = [p for p in _primaries(inp) if p.region == inp.regions.serving]
    if not primaries:
        return
    replicas = _replicas(inp)
    for region in standby_regions(inp.regions):
        there = [r for r in replicas if r.region == region]
        states = {r.id: _db_state(inp, r) for r in there}
        ready = [r for r in there if states[r.id] is Ready.READY]
        if not ready:
            if Ready.UNKNOWN in states.values():
                continue
            why = f"not ready: {_names(there)}" if there else "there is none"
            note = f"{region} (standby region): no healthy replica of {primaries[0].name}: {why}"
            yield _warn(Finding.REGION_REPLICA_MISSING, region, note, targets=there)
            continue
        d = _lagging(inp, region, ready)
        if d is not None:
            yield d


def _lag(inp: ReadinessInput, inst: Instance) -> float | None:
    check = database_check(inp.snapshot, inst.id)
    data = check.get("data") if check is not None else None
    lag = data.get("lag_s") if isinstance(data, Mapping) else None
    return float(lag) if isinstance(lag, int | float) and not isinstance(lag, bool) else None


def _lagging(inp: ReadinessInput, region: str, ready: list[Instance]) -> Diagnosis | None:
    """Ready replicas in the region, all behind by more than their RPO: the best one is
    what a failover would promote."""
    lags = {r.id: _lag(inp, r) for r in ready}
    if any(lag is None for lag in lags.values()):
        return None  # a lag not known is not a lag beyond the RPO
    if any((lags[r.id] or 0.0) <= inp.cfg.rpo_of(r.group) for r in ready):
        return None
    best = min(ready, key=lambda r: lags[r.id] or 0.0)
    lag, rpo = lags[best.id] or 0.0, inp.cfg.rpo_of(best.group)
    note = (
        f"{region} (standby region): {best.name} lags {lag:.1f} s behind the primary, more "
        f"than the RPO ({format_duration(rpo)}): a failover now would lose that much"
    )
    facts = {"lag_s": f"{lag:.3f}", "rpo_s": f"{rpo:g}"}
    return _warn(Finding.REGION_REPLICA_LAGGING, region, note, targets=[best], facts=facts)


def rule_standby_images(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """Every group of the serving region needs an image in each standby region (tagged
    with its group or its role), or region.failover cannot launch it there."""
    serving = inp.regions.serving
    groups = {i.group: i.role for i in inp.members() if i.region == serving}
    for region in standby_regions(inp.regions):
        images = inp.images.get(region)
        if images is None:
            continue  # not listed yet (or the listing failed): unknown
        for group, role in sorted(groups.items()):
            if any(_image_fits(img, group, role, inp.cfg.group_tag) for img in images):
                continue
            note = (
                f"{region} (standby region): no image for group {group} ({role.value}); "
                f"tag one with {inp.cfg.group_tag}={group} or {ROLE_TAG}={role.value}"
            )
            yield _warn(
                Finding.STANDBY_IMAGE_MISSING, region, note, groups=(group,), facts={"group": group}
            )


def _image_fits(img: ImageRef, group: str, role: Role, group_tag: str) -> bool:
    return img.tags.get(group_tag) == group or img.tags.get(ROLE_TAG) == role.value


def rule_residency(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """A data class that may not live in a standby region: failing over there would break
    its residency, so region.failover refuses (`residency_refusal`)."""
    for region in standby_regions(inp.regions):
        why = residency_refusal(inp.cfg.residency, region)
        if why is None:
            continue
        classes = tuple(c for c in sorted(inp.cfg.residency) if region not in inp.cfg.residency[c])
        yield _warn(
            Finding.RESIDENCY_BLOCKS_FAILOVER,
            region,
            f"{region} (standby region): {why}",
            facts={"data_classes": ",".join(classes)},
        )


def residency_refusal(residency: Mapping[str, Collection[str]], to_region: str) -> str | None:
    """Why a region failover to `to_region` must not happen: the data classes whose
    residency (config `[residency]`: class -> the regions its data may live in) does not
    include it, in words; None when every class may live there. A failover moves all of
    the service's data, so every class with a rule counts."""
    barred = sorted(c for c, allowed in residency.items() if to_region not in allowed)
    if not barred:
        return None
    rules = "; ".join(f"{c} may live only in {', '.join(sorted(residency[c]))}" for c in barred)
    return f"residency: a failover to {to_region} would move data it may not hold ({rules})"


def rule_dns_matches_serving(inp: ReadinessInput) -> Iterable[Diagnosis]:
    """The DNS PRIMARY record must point where the primary database is, and the SECONDARY
    record at the standby region: otherwise clients reach the wrong region, or Route 53's
    own failover sends them nowhere useful."""
    roles = inp.regions
    if not roles.records or roles.dns_error:
        return  # no records read (no [dns], or the read failed): unknown
    dbs = ", ".join(roles.database_regions)
    if roles.dns_region and dbs and roles.dns_region not in roles.database_regions:
        note = (
            f"the DNS PRIMARY record points at {roles.dns_region}; the primary database is in {dbs}"
        )
        yield _warn(Finding.DNS_MISMATCH, roles.dns_region, note, facts={"record": "PRIMARY"})
    serving = roles.serving
    if serving and roles.standby and roles.secondary_region != roles.standby:
        where = roles.secondary_region or "no known region (or there is no SECONDARY record)"
        note = (
            f"the DNS SECONDARY record points at {where}, not at the standby region {roles.standby}"
        )
        yield _warn(Finding.DNS_MISMATCH, serving, note, facts={"record": "SECONDARY"})


READINESS_RULES: tuple[tuple[str, ReadinessRule], ...] = (
    ("group_single_zone", rule_group_single_zone),
    ("lb_standby", rule_lb_standby),
    ("db_zone_replica", rule_db_zone_replica),
    ("region_replica", rule_region_replica),
    ("standby_images", rule_standby_images),
    ("residency", rule_residency),
    ("dns", rule_dns_matches_serving),
)
# Readiness this build does not judge yet (shown in the status as `readiness.pending`).
PENDING_RULES: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """The readiness warnings, and which region serves."""

    diagnoses: tuple[Diagnosis, ...] = ()
    regions: RegionRoles = UNKNOWN_ROLES


def assess_readiness(inp: ReadinessInput) -> ReadinessReport:
    found = tuple(d for _, rule in READINESS_RULES for d in rule(inp))
    return ReadinessReport(found, inp.regions)


def regional_fallback(regions: RegionRoles, lost: Collection[str]) -> tuple[bool, str]:
    """Has the service a region to fail over to right now, and why (not)? `lost`: the
    regions with a dr_capacity_lost finding (their API and instances unreachable)."""
    standby = standby_regions(regions)
    if regions.serving is None:
        return False, f"unknown: {regions.detail}"
    if not standby:
        return False, f"none: {regions.serving} serves and no region stands by"
    alive = [r for r in standby if r not in lost]
    if not alive:
        return False, f"none: the standby region {', '.join(standby)} is lost (dr_capacity_lost)"
    return True, f"{', '.join(alive)} stands by for {regions.serving}"
