"""Discovery: which cloud instances drwatch watches, as a `Fleet`.

Each configured region is listed concurrently. An instance joins at most one group: the
first group, in config order, whose selector matches it (every selector tag equal, or
its id listed in `instance_ids`). Instances that match no group are not watched.

Rules that keep the fleet honest through provider blips and outages:

- A region whose API fails (or does not answer within `region_deadline` seconds) keeps
  the instances the `previous` fleet had there, unchanged, and is named in `errors`: a
  blip must not make instances "leave" (and a replacement playbook start for each).
- Stopped instances stay: a stopped server is an outage, not a departure.
- Terminated instances stay while the provider still lists them (AWS does for about an
  hour), with state `terminated`, so assess can see what happened to them; they leave the
  fleet once the provider stops listing them. Playbooks that replace a terminated instance
  therefore see both the old (terminated) and the new instance for a while.

Discovery is a function with no memory: it logs a failed region at debug level only, and
the caller, which keeps the previous result, logs when `errors` changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from drwatch.config import GroupConfig, ProviderConfig
from drwatch.errors import ProviderError
from drwatch.logs import get_logger
from drwatch.model.fleet import Fleet, Instance
from drwatch.providers.base import CloudInstance, Inventory


def _log() -> Any:
    # Bound at use, not import: a logger bound before logs.configure() keeps the defaults.
    return get_logger(component="discovery")


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """The fleet, plus what went wrong per region and which instances matched two groups.

    `errors` maps a region to a short reason; that region's instances are the previous
    fleet's. `conflicts` maps an instance id to every group it matched (it joined the first).
    """

    fleet: Fleet
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    conflicts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ok(self) -> bool:
        return not self.errors


def matches(group: GroupConfig, inst: CloudInstance) -> bool:
    """Whether the group's selector takes this instance: all tags equal, or id listed."""
    if inst.id in group.select.instance_ids:
        return True
    tags = dict(inst.tags)
    sel = group.select.tags
    return bool(sel) and all(tags.get(k) == v for k, v in sel.items())


def to_instance(inst: CloudInstance, group: GroupConfig) -> Instance:
    """A cloud instance as drwatch's model sees it, with role and group from the config."""
    return Instance(
        id=inst.id,
        name=inst.tag("Name") or inst.id,
        region=inst.region,
        zone=inst.zone,
        role=group.role,
        group=group.name,
        state=inst.state,
        private_ip=inst.private_ip,
        public_ip=inst.public_ip,
        image_id=inst.image_id,
        volumes=inst.volumes,
        tags=inst.tags,
        launched_at=inst.launched_at,
    )


async def discover(
    inventory: Inventory,
    provider_cfg: ProviderConfig,
    groups: Sequence[GroupConfig],
    now: float,
    previous: Fleet | None = None,
    *,
    region_deadline: float = 30.0,
) -> DiscoveryResult:
    """List every configured region and build the fleet. Never raises a ProviderError."""
    regions = provider_cfg.regions
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_list_region(inventory, r, region_deadline)) for r in regions]
    kept = previous or Fleet()
    instances: list[Instance] = []
    errors: dict[str, str] = {}
    conflicts: dict[str, tuple[str, ...]] = {}
    for region, task in zip(regions, tasks, strict=True):
        listed = task.result()
        if isinstance(listed, str):
            errors[region] = listed
            instances.extend(kept.in_region(region))
            continue
        for inst in listed:
            hits = [g for g in groups if matches(g, inst)]
            if hits:
                instances.append(to_instance(inst, hits[0]))
            if len(hits) > 1:
                conflicts[inst.id] = tuple(g.name for g in hits)
    instances.sort(key=lambda i: (i.region, i.group, i.name, i.id))
    return DiscoveryResult(
        fleet=Fleet(instances=tuple(instances), discovered_at=now),
        errors=MappingProxyType(errors),
        conflicts=MappingProxyType(conflicts),
    )


async def _list_region(
    inventory: Inventory, region: str, deadline: float
) -> list[CloudInstance] | str:
    """The region's instances, or a short reason why they could not be listed."""
    try:
        async with asyncio.timeout(deadline):
            return await inventory.instances(region)
    except TimeoutError:
        reason = f"no answer within {deadline:g}s"
    except ProviderError as err:
        reason = f"{err.code or type(err).__name__}: {err}"
    _log().debug("discovery.region_failed", region=region, reason=reason)
    return reason
