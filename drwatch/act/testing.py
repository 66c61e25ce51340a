"""Test doubles for playbook tests: simulated hosts over an in-memory provider.

`SimulatedHosts` is both the `FleetView` and the `AgentActions` a playbook needs. It
reads the fleet from the provider (tags -> roles and groups), says every running
instance's agent and app are up unless a test marks it `down`, reports a database
check like the sandbox's agent (role, and integrity `corrupt` when an attached volume,
or the snapshot it was made from, is marked corrupt), and applies agent actions the way
the sandbox hosts do (idempotent: a set of backends, a role, a database address).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from drwatch.act.base import GROUP_TAG, JSON, ROLE_TAG, GroupInfo
from drwatch.errors import DrwatchError
from drwatch.model.fleet import Fleet, Instance, InstanceState, Role
from drwatch.model.observation import Health, Layer, TargetHealth
from drwatch.model.snapshot import HealthKey, Snapshot
from drwatch.providers.base import AddressInfo, CloudInstance, Provider, VolumeInfo


class AgentUnreachableError(DrwatchError):
    """The simulated agent does not answer (host down or stopped)."""


@dataclass
class SimulatedHosts:
    """FleetView + AgentActions over a provider, for tests."""

    provider: Provider
    regions: tuple[str, ...] = ("us-east-1",)
    groups: Mapping[str, GroupInfo] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)  # volume or snapshot ids
    roles: dict[str, str] = field(default_factory=dict)  # database role by instance id
    backends: dict[str, set[str]] = field(default_factory=dict)  # by LB instance id
    databases: dict[str, str] = field(default_factory=dict)  # by app instance id
    actions: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    now: float = 1_000_000.0
    _latest: Snapshot = field(default_factory=lambda: Snapshot(taken_at=0.0, fleet=Fleet()))

    # -- FleetView ------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        return self._latest

    async def refresh(self) -> Snapshot:
        cloud: list[CloudInstance] = []
        volumes: list[VolumeInfo] = []
        addresses: list[AddressInfo] = []
        for region in self.regions:
            cloud += await self.provider.instances(region)
            volumes += await self.provider.volumes(region)
            addresses += await self.provider.addresses(region)
        fleet = Fleet(tuple(_instance(c) for c in cloud if c.tag(ROLE_TAG)), self.now)
        health: dict[HealthKey, TargetHealth] = {}
        for inst in fleet:
            self._host_health(inst, volumes, health)
        for group in self.groups.values():
            self._service_health(group, fleet, addresses, health)
        self._latest = Snapshot(self.now, fleet, MappingProxyType(health))
        return self._latest

    def _host_health(
        self, inst: Instance, volumes: list[VolumeInfo], out: dict[HealthKey, TargetHealth]
    ) -> None:
        running = inst.state is InstanceState.RUNNING
        up = running and inst.id not in self.down
        out[(inst.id, Layer.PROVIDER)] = self._th(inst.id, Layer.PROVIDER, running)
        out[(inst.id, Layer.APP)] = self._th(inst.id, Layer.APP, up)
        detail = self._facts(inst, volumes) if up and inst.role is Role.DATABASE else {}
        out[(inst.id, Layer.AGENT)] = self._th(inst.id, Layer.AGENT, up, detail)

    def _service_health(
        self,
        group: GroupInfo,
        fleet: Fleet,
        addresses: list[AddressInfo],
        out: dict[HealthKey, TargetHealth],
    ) -> None:
        if group.role is not Role.LOAD_BALANCER or group.elastic_ip is None:
            return
        eip = next((a for a in addresses if _names(a, group.elastic_ip)), None)
        holder = fleet.get(eip.instance_id) if eip and eip.instance_id else None
        up = (
            holder is not None
            and holder.state is InstanceState.RUNNING
            and holder.id not in self.down
        )
        out[(group.name, Layer.SERVICE)] = self._th(group.name, Layer.SERVICE, up)

    def _facts(self, inst: Instance, volumes: list[VolumeInfo]) -> dict[str, Any]:
        mine = [v for v in volumes if v.attached_to == inst.id]
        bad = any(v.id in self.corrupt or v.snapshot_id in self.corrupt for v in mine)
        data = {"role": self.roles.get(inst.id, "primary"), "integrity": "corrupt" if bad else "ok"}
        check = {"name": "database", "kind": "database", "status": "ok", "data": data}
        return {"checks": {"database": check}}

    def _th(self, target: str, layer: Layer, up: bool, detail: JSON | None = None) -> TargetHealth:
        return TargetHealth(
            target=target,
            layer=layer,
            health=Health.UP if up else Health.DOWN,
            since=self.now,
            attempted_at=self.now,
            ok_at=self.now if up else None,
            last=Health.UP if up else Health.DOWN,
            detail=MappingProxyType(detail or {}),
        )

    # -- AgentActions ---------------------------------------------------------------------

    async def action(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON:
        current = self._latest.fleet.get(instance.id)
        state = current.state if current else instance.state
        if instance.id in self.down or state is not InstanceState.RUNNING:
            raise AgentUnreachableError(f"{instance.name}: agent does not answer")
        self.actions.append((instance.id, name, dict(params)))
        return self._apply(instance, name, params)

    def _apply(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON:
        if name == "register_backend":
            self.backends.setdefault(instance.id, set()).add(params["address"])
            return {"backends": sorted(self.backends[instance.id])}
        if name == "deregister_backend":
            self.backends.setdefault(instance.id, set()).discard(params["address"])
            return {"backends": sorted(self.backends[instance.id])}
        if name == "promote":
            previous = self.roles.get(instance.id, "primary")
            self.roles[instance.id] = "primary"
            return {"role": "primary", "previous_role": previous}
        if name == "set_database":
            self.databases[instance.id] = params["address"]
            return {"database": params["address"]}
        raise AgentUnreachableError(f"{name} is not an allow-listed action")

    def count(self, name: str) -> int:
        return sum(1 for _, n, _ in self.actions if n == name)


def _names(addr: AddressInfo, wanted: str) -> bool:
    return addr.allocation_id == wanted or dict(addr.tags).get("Name") == wanted


def _instance(c: CloudInstance) -> Instance:
    return Instance(
        id=c.id,
        name=c.tag("Name") or c.id,
        region=c.region,
        zone=c.zone,
        role=Role(c.tag(ROLE_TAG) or "app_server"),
        group=c.tag(GROUP_TAG) or "",
        state=c.state,
        private_ip=c.private_ip,
        public_ip=c.public_ip,
        image_id=c.image_id,
        volumes=c.volumes,
        tags=c.tags,
        launched_at=c.launched_at,
    )
