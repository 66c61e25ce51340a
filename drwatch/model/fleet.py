"""The fleet: instances as drwatch sees them, in frozen value types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    LOAD_BALANCER = "load_balancer"
    APP_SERVER = "app_server"
    DATABASE = "database"


# An optional tag on a database instance: "primary", or "replica"/"standby"/"secondary".
# Read when deciding whether a lost database is the primary; the promote step sets it.
DB_ROLE_TAG = "drwatch:db-role"


class InstanceState(StrEnum):
    """EC2's instance states, plus `unknown` when the provider could not tell us."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"

    @property
    def is_gone(self) -> bool:
        """Stopped or on its way out: the instance cannot serve."""
        return self in (
            InstanceState.STOPPING,
            InstanceState.STOPPED,
            InstanceState.SHUTTING_DOWN,
            InstanceState.TERMINATED,
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """One server. `id` is the provider's id and the key everywhere; `name` is its Name tag."""

    id: str
    name: str
    region: str
    zone: str
    role: Role
    group: str
    state: InstanceState = InstanceState.RUNNING
    private_ip: str | None = None
    public_ip: str | None = None
    image_id: str | None = None
    volumes: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    launched_at: float | None = None

    def tag(self, key: str) -> str | None:
        return next((v for k, v in self.tags if k == key), None)


@dataclass(frozen=True, slots=True)
class Fleet:
    """Every watched instance, as of `discovered_at` (epoch seconds)."""

    instances: tuple[Instance, ...] = ()
    discovered_at: float = 0.0
    _by_id: dict[str, Instance] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update((i.id, i) for i in self.instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)

    def get(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def by_name(self, name: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.name == name)

    def in_zone(self, zone: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.zone == zone)

    def in_region(self, region: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.region == region)

    def in_group(self, group: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.group == group)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({i.region for i in self.instances}))

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({i.zone for i in self.instances}))
