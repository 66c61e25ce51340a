"""Rules for the wide scopes: zone, region, provider API and the watcher itself.

These corroborate across many targets and layers: a zone is lost only while another
zone of its region still answers, a region only while the canaries and another region
answer, and when the canaries fail too the fault is most likely drwatch's own network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from drwatch.assess.rules import Context
from drwatch.assess.views import UNSEEN, InstanceView, LayerView, Seen, zone_impaired
from drwatch.model.findings import Diagnosis, Finding, scope_key
from drwatch.model.plan import Scope


def _lost(v: InstanceView) -> bool:
    """Not serving: gone at the provider, or nothing on it answers."""
    return v.gone or v.unreachable or (v.status_impaired and not v.answering)


def _wide(
    finding: Finding, scope: Scope, name: str, views: Iterable[InstanceView], **kw: object
) -> Diagnosis:
    vs = tuple(views)
    return Diagnosis(
        finding=finding,
        key=scope_key(scope, name),
        roles=tuple(sorted({v.instance.role for v in vs})),
        groups=tuple(sorted({v.instance.group for v in vs})),
        targets=tuple(sorted(v.instance.id for v in vs)),
        **kw,  # type: ignore[arg-type]
    )


def _zones(ctx: Context) -> dict[str, str]:
    """Every zone we know of, with its region (from the instances in it)."""
    zones = {z: "" for z in ctx.zones}
    zones.update({v.instance.zone: v.instance.region for v in ctx.instances})
    return zones


def rule_zone(ctx: Context) -> Iterable[Diagnosis]:
    for zone, region in sorted(_zones(ctx).items()):
        d = _zone_reported(ctx, zone, region) or _zone_by_share(ctx, zone, region)
        if d is not None:
            yield d


def _zone_reported(ctx: Context, zone: str, region: str) -> Diagnosis | None:
    """The provider reports the zone impaired: an outage if instances there are lost,
    a warning while they all still answer."""
    if not zone_impaired(ctx.zones.get(zone, LayerView(Seen.UNKNOWN))):
        return None
    members = ctx.in_zone(zone)
    lost = [v for v in members if _lost(v)]
    since = ctx.zones[zone].since
    state = ctx.zones[zone].detail.get("state", "impaired")
    if not lost:
        note = f"provider reports {zone} {state}; " + (
            f"its {len(members)} instance(s) still answer" if members else "nothing watched there"
        )
        return _zone_finding(Finding.ZONE_IMPAIRED, zone, region, (), evidence=note, since=since)
    note = f"provider reports {zone} {state}; {len(lost)}/{len(members)} instance(s) lost"
    return _zone_finding(Finding.ZONE_OUTAGE, zone, region, lost, evidence=note, since=since)


def _zone_finding(
    finding: Finding,
    zone: str,
    region: str,
    members: Iterable[InstanceView],
    *,
    evidence: str,
    since: float | None,
) -> Diagnosis:
    return _wide(
        finding, Scope.ZONE, zone, members, region=region, zone=zone, evidence=evidence, since=since
    )


def _zone_by_share(ctx: Context, zone: str, region: str) -> Diagnosis | None:
    """A share of the zone's instances unreachable while the provider calls them running
    (or cannot say), across roles, and another zone of the region still answers."""
    members = ctx.in_zone(zone)
    silent = [v for v in members if v.unreachable and not v.gone]
    need = max(2, math.ceil(ctx.cfg.zone_down_share * len(members)))
    if len(silent) < need or not _roles_ok(members, silent):
        return None
    others = [v for v in ctx.in_region(region) if v.instance.zone != zone]
    if not any(v.answering for v in others):
        return None
    lost = [v for v in members if _lost(v)]
    mature = sum(1 for v in silent if ctx.matured(v.silent_since))
    note = (
        f"{len(silent)}/{len(members)} instance(s) of {zone} unreachable "
        f"(roles {', '.join(sorted({v.instance.role.value for v in silent}))}); "
        f"other zones of {region} answer"
    )
    sinces = [v.silent_since for v in silent if v.silent_since is not None]
    since = sorted(sinces)[need - 1] if len(sinces) >= need else None
    if mature < need:
        return _zone_finding(
            Finding.ZONE_SUSPECT, zone, region, silent, evidence=note + ctx.left(since), since=since
        )
    if any(v.status_impaired for v in silent):
        return _zone_finding(Finding.ZONE_OUTAGE, zone, region, lost, evidence=note, since=since)
    # Silence alone, seen from one place: the provider does not corroborate it.
    state = ctx.zones.get(zone, UNSEEN)
    said = str(state.detail.get("state", "")) or state.seen.value
    note += f"; the provider reports {zone} {said} and these instances running: alert only"
    return _zone_finding(Finding.ZONE_UNREACHABLE, zone, region, silent, evidence=note, since=since)


def _roles_ok(members: tuple[InstanceView, ...], silent: list[InstanceView]) -> bool:
    """More than one role down (a role-wide failure is not a zone's), unless the zone
    holds a single role to begin with."""
    down_roles = {v.instance.role for v in silent}
    return len(down_roles) > 1 or len({v.instance.role for v in members}) == 1


def _regions(ctx: Context) -> list[str]:
    return sorted({v.instance.region for v in ctx.instances} | set(ctx.apis))


def _region_answers(ctx: Context, region: str) -> bool:
    api = ctx.apis.get(region)
    return (api is not None and api.answering) or any(v.answering for v in ctx.in_region(region))


def _canaries_answer(ctx: Context) -> bool:
    """At least one canary answers, or none is configured (nothing to corroborate with)."""
    return not ctx.canaries or any(c.answering for c in ctx.canaries.values())


def rule_region(ctx: Context) -> Iterable[Diagnosis]:
    for region in _regions(ctx):
        api = ctx.apis.get(region)
        members = ctx.in_region(region)
        if api is None or not api.silent or not members:
            continue
        if any(v.answering for v in members) or not any(v.unreachable for v in members):
            continue
        if not _canaries_answer(ctx):
            continue
        others = [r for r in _regions(ctx) if r != region and _region_answers(ctx, r)]
        if not others:
            continue
        sinces = [api.since] + [v.silent_since for v in members]
        since = max((s for s in sinces if s is not None), default=None)
        note = (
            f"{region} API {api.seen.value} ({api.reason or 'no answer'}); none of its "
            f"{len(members)} instance(s) answers; canaries and {', '.join(others)} answer"
        )
        if ctx.matured(since):
            yield _wide(
                Finding.REGION_OUTAGE,
                Scope.REGION,
                region,
                members,
                region=region,
                evidence=note,
                since=since,
            )
        else:
            yield _wide(
                Finding.REGION_SUSPECT,
                Scope.REGION,
                region,
                members,
                region=region,
                evidence=note + ctx.left(since),
                since=since,
            )


def rule_provider_api(ctx: Context) -> Iterable[Diagnosis]:
    """The API fails while the region's instances answer: alert, never act."""
    for region in _regions(ctx):
        api = ctx.apis.get(region)
        members = ctx.in_region(region)
        if api is None or not api.silent or not ctx.matured(api.since):
            continue
        answering = [v for v in members if v.answering]
        if not answering:
            continue
        note = (
            f"{region} API {api.seen.value} ({api.reason or 'no answer'}); "
            f"{len(answering)}/{len(members)} instance(s) answer through agent or app"
        )
        yield Diagnosis(
            finding=Finding.PROVIDER_API_DOWN,
            key=scope_key(Scope.PROVIDER_API, region),
            region=region,
            evidence=note,
            since=api.since,
        )


def rule_watcher(ctx: Context) -> Iterable[Diagnosis]:
    """Every canary fails: drwatch's own network is impaired. With no canary answering
    and nothing else answering either, the same conclusion."""
    tried = {n: c for n, c in ctx.canaries.items() if c.seen is not Seen.UNKNOWN}
    failing = sorted(n for n, c in tried.items() if c.silent)
    if tried and len(failing) == len(tried):
        note = f"every canary fails ({', '.join(failing)})"
        yield Diagnosis(Finding.WATCHER_IMPAIRED, scope_key(Scope.WATCHER), evidence=note)
        return
    if failing:
        note = f"canaries failing: {', '.join(failing)}; others answer"
        yield Diagnosis(Finding.CANARY_FAILING, scope_key(Scope.WATCHER), evidence=note)
        return
    if not any(c.answering for c in ctx.canaries.values()) and _nothing_answers(ctx):
        note = "nothing answers: no canary, no provider API, no agent, no app"
        yield Diagnosis(Finding.WATCHER_IMPAIRED, scope_key(Scope.WATCHER), evidence=note)


def _nothing_answers(ctx: Context) -> bool:
    layers = [lv for v in ctx.instances for lv in (v.provider, v.agent, v.app)]
    layers += list(ctx.apis.values())
    known = [lv for lv in layers if lv.seen is not Seen.UNKNOWN]
    return len(known) >= 2 and all(lv.silent for lv in known)


def rule_discovery(ctx: Context) -> Iterable[Diagnosis]:
    """A watcher that cannot find the fleet is blind, not healthy: discovery failing where
    no instance of a configured group is known, or an empty fleet while the config
    expects groups. Discovery failing with the last known fleet still watched: a warning."""
    errors = ctx.discovery.errors
    failing = "; ".join(f"{r}: {why}" for r, why in sorted(errors.items()))
    missing = [g for g in ctx.discovery.expected_groups if g not in ctx.fleet_groups]
    empty = not ctx.fleet_groups and bool(ctx.discovery.expected_groups)
    if empty or (errors and missing):
        note = f"no instance found of group(s) {', '.join(missing)}"
        note += f"; discovery failing ({failing})" if failing else ""
        yield Diagnosis(Finding.WATCHER_BLIND, scope_key(Scope.WATCHER), evidence=note)
    elif errors:
        note = f"discovery failing ({failing}); watching the instances last seen there"
        yield Diagnosis(Finding.DISCOVERY_FAILING, scope_key(Scope.WATCHER), evidence=note)
