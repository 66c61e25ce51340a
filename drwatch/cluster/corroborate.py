"""Vantage in the loop: this watcher's view for the others, and its silence checked
against theirs before the cycle sees it. Pure: snapshot and views in, `now` passed in.

`my_view` turns a snapshot into the compact view every watcher publishes each tick (per
instance: up, silent, or unknown). `corroborate` takes this watcher's snapshot and every
fresh view: an instance this watcher finds silent (agent and app give no answer), with
no failure asserted by the provider (it says running, or is silent too), is down only
when a quorum of fresh views sees it silent and none reaches it (`vantage.judge_target`).
Otherwise its silent layers are made unknown (unknown is not down), with the verdict as
the reason, so neither an instance finding nor the zone or region findings built from
them come from one watcher's broken path. An instance whose silence a quorum of two or
more watchers sees is named in the snapshot's `corroborated`: it counts as dead after
the shorter `policy.corroborated_grace` (assess.rules). What
the provider asserts (stopped, terminated, impaired, a zone impaired) is left alone: it
needs no quorum. `cut_zones` names the zones this watcher alone finds silent while
another watcher reaches them: its own state, reported on its status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from drwatch.assess.views import InstanceView, RulesConfig, instance_views
from drwatch.cluster.vantage import Basis, Seen, View, fresh, judge_target, judge_zone
from drwatch.model.observation import Health, Layer
from drwatch.model.snapshot import Snapshot

SILENCE_LAYERS = (Layer.AGENT, Layer.APP)


@dataclass(frozen=True, slots=True)
class Corroborated:
    snapshot: Snapshot
    # instance name -> why its silence was set aside ("answers drwatch-2; ...")
    set_aside: Mapping[str, str] = field(default_factory=dict)
    cut_zones: tuple[str, ...] = ()
    fresh_views: tuple[str, ...] = ()
    # instance ids whose silence two or more watchers see, with no watcher reaching them
    corroborated: frozenset[str] = frozenset()


def _seen(iv: InstanceView) -> Seen:
    if iv.answering:
        return Seen.UP
    if iv.unreachable:
        return Seen.SILENT
    return Seen.UNKNOWN


def my_view(me: str, snapshot: Snapshot, now: float, cfg: RulesConfig) -> View:
    views = instance_views(snapshot, now, cfg, frozenset())
    return View(me, now, {iv.instance.id: _seen(iv) for iv in views})


def corroborate(
    snapshot: Snapshot,
    views: Sequence[View],
    *,
    me: str,
    now: float,
    cfg: RulesConfig,
    quorum: int,
    max_age: float,
) -> Corroborated:
    """See the module doc. `views` should include this watcher's own (as published)."""
    own = my_view(me, snapshot, now, cfg)
    current = [v for v in fresh(views, now, max_age) if v.watcher != me]
    current.append(own)
    health = dict(snapshot.health)
    set_aside: dict[str, str] = {}
    seen_by_quorum: set[str] = set()
    for iv in instance_views(snapshot, now, cfg, frozenset()):
        if own.targets.get(iv.instance.id) is not Seen.SILENT or iv.provider.failing:
            continue  # not silent here, or the provider asserts a failure: no quorum needed
        verdict = judge_target(iv.instance.id, current, now=now, max_age=max_age, quorum=quorum)
        if verdict.basis is Basis.QUORUM:
            if len(verdict.silent_from) >= 2:  # other vantage points, not this one alone
                seen_by_quorum.add(iv.instance.id)
            continue
        set_aside[iv.instance.name] = verdict.reason
        for layer in SILENCE_LAYERS:
            th = health.get((iv.instance.id, layer))
            if th is not None:
                reason = f"vantage: {verdict.reason}"
                health[(iv.instance.id, layer)] = replace(
                    th, health=Health.UNKNOWN, last=Health.UNKNOWN, attempted_at=None, reason=reason
                )
    zones = _cut_zones(snapshot, current, me=me, now=now, max_age=max_age, cfg=cfg, quorum=quorum)
    return Corroborated(
        replace(snapshot, health=MappingProxyType(health), corroborated=frozenset(seen_by_quorum)),
        set_aside,
        zones,
        tuple(v.watcher for v in current),
        frozenset(seen_by_quorum),
    )


def _cut_zones(
    snapshot: Snapshot,
    views: Sequence[View],
    *,
    me: str,
    now: float,
    max_age: float,
    cfg: RulesConfig,
    quorum: int,
) -> tuple[str, ...]:
    by_zone: dict[str, list[str]] = {}
    for inst in snapshot.fleet:
        by_zone.setdefault(inst.zone, []).append(inst.id)
    cut = []
    for zone, ids in sorted(by_zone.items()):
        verdict = judge_zone(
            ids, views, now=now, max_age=max_age, quorum=quorum, share=cfg.zone_down_share
        )
        if me in verdict.cut:
            cut.append(zone)
    return tuple(cut)
