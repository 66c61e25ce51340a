"""A small world builder for scenario tables: the default topology, healthy, then faults.

Times: `NOW` is the tick; `LONG_AGO` is well past the dead grace; `JUST_NOW` is within it.
Every fault sets debounced health as the health store would (health, since, detail).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from drwatch.assess import RulesConfig
from drwatch.model import Fleet, Health, Instance, Layer, Role, Snapshot, TargetHealth

NOW = 100_000.0
LONG_AGO = NOW - 600.0
JUST_NOW = NOW - 3.0
GRACE = 30.0
RULES = RulesConfig(dead_grace=GRACE, zone_down_share=0.75, max_age={}, default_max_age=20.0)

# name, role, region, zone, group
TOPOLOGY: tuple[tuple[str, Role, str, str, str], ...] = (
    ("lb-1", Role.LOAD_BALANCER, "us-east-1", "us-east-1a", "web-lb"),
    ("lb-2", Role.LOAD_BALANCER, "us-east-1", "us-east-1b", "web-lb"),
    ("app-1", Role.APP_SERVER, "us-east-1", "us-east-1a", "app"),
    ("app-2", Role.APP_SERVER, "us-east-1", "us-east-1a", "app"),
    ("app-3", Role.APP_SERVER, "us-east-1", "us-east-1b", "app"),
    ("app-4", Role.APP_SERVER, "us-east-1", "us-east-1b", "app"),
    ("app-5", Role.APP_SERVER, "us-east-1", "us-east-1c", "app"),
    ("app-6", Role.APP_SERVER, "us-east-1", "us-east-1c", "app"),
    ("db-1", Role.DATABASE, "us-east-1", "us-east-1a", "db"),
    ("db-2", Role.DATABASE, "us-east-1", "us-east-1b", "db"),
    ("db-3", Role.DATABASE, "eu-west-1", "eu-west-1a", "db"),
    ("app-eu-1", Role.APP_SERVER, "eu-west-1", "eu-west-1a", "app-eu"),
    ("lb-eu-1", Role.LOAD_BALANCER, "eu-west-1", "eu-west-1a", "web-lb-eu"),
)
CANARIES = ("canary-a", "canary-b")


def iid(name: str) -> str:
    return f"i-{name}"


def default_fleet() -> Fleet:
    db_roles = {"db-1": "primary", "db-2": "replica", "db-3": "replica"}
    instances = tuple(
        Instance(
            id=iid(n),
            name=n,
            region=r,
            zone=z,
            role=role,
            group=g,
            tags=(("drwatch:db-role", db_roles[n]),) if n in db_roles else (),
        )
        for n, role, r, z, g in TOPOLOGY
    )
    return Fleet(instances=instances, discovered_at=NOW - 5)


def _th(target: str, layer: Layer, health: Health, since: float, **kw: Any) -> TargetHealth:
    detail = MappingProxyType(kw.pop("detail", {}))
    return TargetHealth(
        target=target,
        layer=layer,
        health=health,
        since=since,
        attempted_at=kw.pop("attempted_at", NOW - 1),
        ok_at=kw.pop("ok_at", NOW - 1),
        last=kw.pop("last", health),
        reason=kw.pop("reason", ""),
        detail=detail,
    )


@dataclass
class World:
    fleet: Fleet = field(default_factory=default_fleet)
    health: dict[tuple[str, Layer], TargetHealth] = field(default_factory=dict)

    @classmethod
    def healthy(cls) -> World:
        w = cls()
        for inst in w.fleet:
            w.set(inst.id, Layer.PROVIDER, Health.UP, detail={"state": "running"})
            w.set(inst.id, Layer.AGENT, Health.UP)
            w.set(inst.id, Layer.APP, Health.UP)
        for zone in w.fleet.zones:
            w.set(zone, Layer.ZONE, Health.UP, detail={"state": "available"})
        for region in w.fleet.regions:
            w.set(region, Layer.API, Health.UP)
        for canary in CANARIES:
            w.set(canary, Layer.CANARY, Health.UP)
        return w

    def set(
        self, target: str, layer: Layer, health: Health, since: float = LONG_AGO, **kw: Any
    ) -> World:
        self.health[(target, layer)] = _th(target, layer, health, since, **kw)
        return self

    def name(self, name: str) -> str:
        return iid(name) if self.fleet.get(iid(name)) else name

    # Faults, as the health store would show them after hysteresis.
    def stop(self, name: str, state: str = "stopped", since: float = LONG_AGO) -> World:
        i = iid(name)
        self.set(i, Layer.PROVIDER, Health.DOWN, since, detail={"state": state})
        self.set(i, Layer.AGENT, Health.DOWN, since, reason="connection refused")
        return self.set(i, Layer.APP, Health.DOWN, since, reason="connection refused")

    def dark(self, name: str, since: float = LONG_AGO, health: Health = Health.DOWN) -> World:
        """Agent and app fail; the provider still says running."""
        i = iid(name)
        self.set(i, Layer.AGENT, health, since)
        return self.set(i, Layer.APP, health, since)

    def launched(self, name: str, at: float) -> World:
        """The instance was launched at `at` (a replacement, say)."""
        inst = self.fleet.get(iid(name))
        assert inst is not None
        others = tuple(i for i in self.fleet if i.id != inst.id)
        self.fleet = Fleet((*others, replace(inst, launched_at=at)), self.fleet.discovered_at)
        return self

    def db_role(self, name: str, role: str | None) -> World:
        """Set (or, with None, drop) the instance's drwatch:db-role tag."""
        inst = self.fleet.get(iid(name))
        assert inst is not None
        tags = tuple((k, v) for k, v in inst.tags if k != "drwatch:db-role")
        tags += (("drwatch:db-role", role),) if role else ()
        others = tuple(i for i in self.fleet if i.id != inst.id)
        self.fleet = Fleet((*others, replace(inst, tags=tags)), self.fleet.discovered_at)
        return self

    def never_answered(self, name: str, since: float = LONG_AGO) -> World:
        """Agent and app refused every attempt so far: no `ok_at` on either layer."""
        i = iid(name)
        self.set(i, Layer.AGENT, Health.DOWN, since, ok_at=None, reason="connection refused")
        return self.set(i, Layer.APP, Health.DOWN, since, ok_at=None, reason="connection refused")

    def impair(self, name: str) -> World:
        i = iid(name)
        detail = {"state": "running", "system_status": "impaired", "instance_status": "ok"}
        self.set(i, Layer.PROVIDER, Health.DOWN, detail=detail)
        return self.dark(name, health=Health.UNKNOWN)

    def layer(
        self, name: str, layer: Layer, health: Health, since: float = LONG_AGO, **kw: Any
    ) -> World:
        return self.set(self.name(name), layer, health, since, **kw)

    def zone_state(self, zone: str, state: str) -> World:
        health = Health.UP if state == "available" else Health.DOWN
        return self.set(zone, Layer.ZONE, health, detail={"state": state})

    def provider_blind(self, region: str, since: float = LONG_AGO) -> World:
        """The region's API fails: api down, per-instance provider observations unknown."""
        self.set(region, Layer.API, Health.DOWN, since, reason="connection refused")
        for inst in self.fleet.in_region(region):
            self.set(inst.id, Layer.PROVIDER, Health.UNKNOWN, since, detail={})
        for zone in {i.zone for i in self.fleet.in_region(region)}:
            self.set(zone, Layer.ZONE, Health.UNKNOWN, since)
        return self

    def stale(self, name: str, layer: Layer) -> World:
        key = (self.name(name), layer)
        self.health[key] = replace(self.health[key], attempted_at=NOW - 500)
        return self

    def snapshot(self) -> Snapshot:
        return Snapshot(taken_at=NOW, fleet=self.fleet, health=MappingProxyType(dict(self.health)))


US_EAST_1A = ("lb-1", "app-1", "app-2", "db-1")
