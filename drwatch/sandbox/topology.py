"""The sandbox's world as data: regions, zones, instances, the DNS zone.

`load_topology(path)` reads a TOML topology (docs/topology.md) and validates it whole;
`default_topology()` is the contract topology of DESIGN.md, shipped beside this module.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drwatch.errors import ConfigError
from drwatch.model.fleet import Role
from drwatch.tomlconfig import read_toml

GROUP_TAG = "drwatch:group"
ROLE_TAG = "drwatch:role"
AGENT_ADDR_TAG = "drwatch:agent-addr"
APP_ADDR_TAG = "drwatch:app-addr"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionSpec(_Strict):
    name: str
    zones: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _zones_in_region(self) -> Self:
        stray = [z for z in self.zones if z[:-1] != self.name]
        if stray:
            raise ValueError(f"zones {stray} are not in region {self.name!r}")
        return self


class InstanceSpec(_Strict):
    """One seeded instance. Region is the zone without its last letter."""

    name: str
    role: Role
    group: str
    zone: str
    # load balancers
    elastic_ip: str | None = None
    backends: list[str] = Field(default_factory=list)
    # app servers: the database instance (Name) they use
    database: str | None = None
    # databases
    db_role: Literal["primary", "replica"] | None = None
    primary: str | None = None
    volume: str | None = None
    snapshots: int = Field(default=0, ge=0, le=20)

    @property
    def region(self) -> str:
        return self.zone[:-1]

    def user_data(self) -> str:
        """The UserData a playbook would pass for this instance (docs/sandbox.md)."""
        lines = []
        if self.database:
            lines.append(f"DRWATCH_DB={self.database}")
        if self.backends:
            lines.append(f"DRWATCH_BACKENDS={','.join(self.backends)}")
        if self.db_role:
            lines.append(f"DRWATCH_DB_ROLE={self.db_role}")
        if self.primary:
            lines.append(f"DRWATCH_DB_PRIMARY={self.primary}")
        return "\n".join(lines) + "\n"


class DnsSpec(_Strict):
    zone: str
    record: str
    primary_region: str
    secondary_region: str


class Topology(_Strict):
    region: list[RegionSpec] = Field(min_length=1)
    instance: list[InstanceSpec] = Field(min_length=1)
    dns: DnsSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = list(_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def regions(self) -> list[str]:
        return [r.name for r in self.region]

    @property
    def zones(self) -> list[str]:
        return [z for r in self.region for z in r.zones]

    def by_name(self, name: str) -> InstanceSpec | None:
        return next((i for i in self.instance if i.name == name), None)

    def groups(self) -> dict[str, list[InstanceSpec]]:
        out: dict[str, list[InstanceSpec]] = {}
        for spec in self.instance:
            out.setdefault(spec.group, []).append(spec)
        return out

    def volumes(self) -> list[str]:
        return [i.volume for i in self.instance if i.volume]

    def snapshots(self) -> list[str]:
        """Snapshot names, `<volume>-snap-1` (oldest) to `-snap-N` (newest)."""
        return [
            f"{i.volume}-snap-{n}"
            for i in self.instance
            if i.volume
            for n in range(1, i.snapshots + 1)
        ]


def _problems(topo: Topology) -> list[str]:
    problems = []
    names = [i.name for i in topo.instance]
    problems += [
        f"instance name {n!r} is used twice" for n in sorted(set(names)) if names.count(n) > 1
    ]
    zones = set(topo.zones)
    problems += [
        f"{i.name}: zone {i.zone!r} is not listed under [[region]]"
        for i in topo.instance
        if i.zone not in zones
    ]
    for spec in topo.instance:
        refs = [*spec.backends, *(r for r in (spec.database, spec.primary) if r)]
        problems += [
            f"{spec.name}: refers to unknown instance {r!r}" for r in refs if r not in names
        ]
        if spec.role is Role.DATABASE and spec.db_role is None:
            problems.append(f"{spec.name}: a database needs db_role (primary or replica)")
    roles: dict[str, set[Role]] = {}
    for spec in topo.instance:
        roles.setdefault(spec.group, set()).add(spec.role)
    problems += [f"group {g!r} mixes roles" for g, r in sorted(roles.items()) if len(r) > 1]
    return problems


def parse_topology(data: dict[str, object]) -> Topology:
    try:
        return Topology.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            [
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in err.errors()
            ]
        ) from None


def load_topology(path: Path) -> Topology:
    return parse_topology(read_toml(path))


def default_topology() -> Topology:
    text = resources.files("drwatch.sandbox").joinpath("default_topology.toml").read_text()
    return parse_topology(tomllib.loads(text))
