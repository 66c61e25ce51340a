"""The fault verbs (a contract: DESIGN.md), what each targets, and the parameters it takes.

Shared by the control API, the CLI and scenario validation, so a verb or target that
one accepts the others accept too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from drwatch.sandbox.topology import Topology
from drwatch.units import parse_duration


class TargetKind(StrEnum):
    INSTANCE = "instance"
    ZONE = "zone"
    REGION = "region"
    WATCHER = "watcher"
    VANTAGE = "watcher/zone"  # one watcher's path to one zone: drwatch-2/us-east-1b
    MEMBER = "watcher name"  # one of several watchers: drwatch-2, or leader
    VOLUME = "volume"
    SNAPSHOT = "snapshot"
    OFFSITE = "offsite"  # the off-site backup provider
    DATA_CLASS = "data_class"  # a backup data class of the sandbox (DESIGN.md: a contract)


HEAL = "heal"
APPROVE = "approve"
# What an `approve` may name: the region, zone or instance of an open incident.
APPROVABLE = frozenset({TargetKind.REGION, TargetKind.ZONE, TargetKind.INSTANCE})
WATCHER = "watcher"
OFFSITE = "offsite"
EVERY_SNAPSHOT = "/*"
DATA_CLASSES = ("orders", "app-config", "images", "scratch")

# verb -> (what it targets, its parameter or None)
VERBS: dict[str, tuple[TargetKind, str | None]] = {
    # An operator's approval of the open incident on a region, zone or instance.
    "approve": (TargetKind.REGION, None),
    "stop-instance": (TargetKind.INSTANCE, None),
    "terminate-instance": (TargetKind.INSTANCE, None),
    "impair-instance": (TargetKind.INSTANCE, None),
    "kill-agent": (TargetKind.INSTANCE, None),
    "fail-app": (TargetKind.INSTANCE, None),
    "hang-app": (TargetKind.INSTANCE, None),
    "slow-app": (TargetKind.INSTANCE, "delay"),
    "flap-app": (TargetKind.INSTANCE, "period"),
    "fill-disk": (TargetKind.INSTANCE, "percent"),
    "zone-outage": (TargetKind.ZONE, None),
    "region-outage": (TargetKind.REGION, None),
    "api-outage": (TargetKind.REGION, None),
    "throttle-api": (TargetKind.REGION, None),
    "cut-uplink": (TargetKind.WATCHER, None),
    "fail-launches": (TargetKind.ZONE, None),
    "corrupt-volume": (TargetKind.VOLUME, None),
    "corrupt-snapshot": (TargetKind.SNAPSHOT, None),
    "kill-watcher": (TargetKind.WATCHER, "delay"),
    "kill-leader": (TargetKind.WATCHER, "delay"),
    "etcd-outage": (TargetKind.WATCHER, None),
    "cut-vantage": (TargetKind.VANTAGE, None),
    "cut-etcd": (TargetKind.MEMBER, None),
    "grow-disk": (TargetKind.INSTANCE, "rate"),
    "lag-replica": (TargetKind.INSTANCE, "delay"),
    "s3-outage": (TargetKind.REGION, None),
    "offsite-outage": (TargetKind.OFFSITE, None),
    "corrupt-backup": (TargetKind.DATA_CLASS, None),
    # Not a fault: the operator's restore test with the offline key (its result in the
    # event; a failed restore fails the drill). Needs `backups = true` and `postgres = true`.
    "restore-test": (TargetKind.DATA_CLASS, None),
    "pause": (TargetKind.WATCHER, None),
    "resume": (TargetKind.WATCHER, None),
    "partition-zone": (TargetKind.ZONE, None),
    "refuse-credentials": (TargetKind.REGION, None),
}
# Verbs that need the sandbox's backups (`backups = true` in a drill).
BACKUP_VERBS = frozenset({"s3-outage", "offsite-outage", "corrupt-backup", "restore-test"})

DEFAULTS = {"delay": 2.0, "period": 2.0, "percent": 95.0, "rate": 10.0}


@dataclass(frozen=True)
class Fault:
    verb: str
    target: str
    params: dict[str, float] = field(default_factory=dict)

    def param(self, name: str) -> float:
        return self.params.get(name, DEFAULTS[name])


def target_kind(topo: Topology, target: str) -> TargetKind | None:
    """What `target` names in this topology, or None when it names nothing."""
    if target == WATCHER:
        return TargetKind.WATCHER
    if target == OFFSITE:
        return TargetKind.OFFSITE
    if target in DATA_CLASSES:
        return TargetKind.DATA_CLASS
    if re.fullmatch(r"drwatch-[1-9]|leader", target):
        return TargetKind.MEMBER
    watcher, _, zone = target.partition("/")
    # `leader/ZONE`: whichever watcher leads when the fault is applied.
    if zone in topo.zones and re.fullmatch(r"drwatch-[1-9]|leader", watcher):
        return TargetKind.VANTAGE
    names: list[tuple[TargetKind, list[str]]] = [
        (TargetKind.INSTANCE, [i.name for i in topo.instance]),
        (TargetKind.ZONE, topo.zones),
        (TargetKind.REGION, topo.regions),
        (TargetKind.VOLUME, topo.volumes()),
        (TargetKind.SNAPSHOT, topo.snapshots()),
        # `VOLUME/*`: every snapshot of that volume taken so far (corrupt-snapshot).
        (TargetKind.SNAPSHOT, [v + EVERY_SNAPSHOT for v in topo.volumes()]),
    ]
    return next((kind for kind, known in names if target in known), None)


def check_target(topo: Topology, verb: str, target: str) -> str | None:
    """None when `verb` may be applied to `target`; otherwise the problem, in words."""
    if verb == HEAL:
        return None if target_kind(topo, target) else f"unknown target {target!r}"
    if verb not in VERBS:
        return f"unknown verb {verb!r} (known: {', '.join(sorted([*VERBS, HEAL]))})"
    want, _ = VERBS[verb]
    kind = target_kind(topo, target)
    if kind is None:
        return f"unknown target {target!r} for {verb} (it needs a {want.value})"
    if verb == APPROVE:
        approvable = kind in APPROVABLE
        return None if approvable else f"approve needs a region, zone or instance, not {kind.value}"
    if kind is not want:
        return f"{verb} needs a {want.value} as its target; {target!r} is a {kind.value}"
    return None


def parse_param(verb: str, raw: object) -> dict[str, float]:
    """The verb's parameter as seconds or percent; raises ValueError naming the problem."""
    _, name = VERBS[verb]
    if name is None or raw is None:
        return {}
    if name == "percent":
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 100:
            raise ValueError(f"percent must be a number from 0 to 100 (got {raw!r})")
        return {name: float(raw)}
    if name == "rate":
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 100:
            raise ValueError(
                f"rate must be percent per minute, above 0 and at most 100 (got {raw!r})"
            )
        return {name: float(raw)}
    seconds = parse_duration(raw)
    if name == "period" and seconds <= 0:
        raise ValueError("period must be greater than 0")
    return {name: seconds}
