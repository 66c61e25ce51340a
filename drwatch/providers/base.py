"""The seam to the cloud: two small Protocols with domain types only.

`Inventory` is what observers and discovery read; `Compute` is what playbooks change.
No botocore type crosses this seam; errors arrive as `drwatch.errors.ProviderError`
(or its subclasses `ProviderUnreachableError`, `ProviderThrottledError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from drwatch.model.fleet import InstanceState

Tags = tuple[tuple[str, str], ...]


def tags_of(tags: Tags) -> dict[str, str]:
    return dict(tags)


class StatusCheck(StrEnum):
    """EC2 status-check summaries."""

    OK = "ok"
    IMPAIRED = "impaired"
    INSUFFICIENT_DATA = "insufficient-data"
    NOT_APPLICABLE = "not-applicable"
    INITIALIZING = "initializing"


@dataclass(frozen=True, slots=True)
class CloudInstance:
    id: str
    region: str
    zone: str
    state: InstanceState
    private_ip: str | None = None
    public_ip: str | None = None
    image_id: str | None = None
    instance_type: str | None = None
    volumes: tuple[str, ...] = ()
    tags: Tags = ()
    launched_at: float | None = None
    system_status: StatusCheck = StatusCheck.OK
    instance_status: StatusCheck = StatusCheck.OK

    def tag(self, key: str) -> str | None:
        return next((v for k, v in self.tags if k == key), None)


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    name: str
    region: str
    state: str  # "available", "impaired", "unavailable", "information"


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    id: str
    region: str
    zone: str
    state: str  # creating | available | in-use | deleting | deleted | error
    size_gib: int = 0
    attached_to: str | None = None
    device: str | None = None
    snapshot_id: str | None = None
    tags: Tags = ()


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: str
    region: str
    volume_id: str | None
    state: str  # pending | completed | error
    started_at: float
    tags: Tags = ()


@dataclass(frozen=True, slots=True)
class AddressInfo:
    allocation_id: str
    region: str
    public_ip: str
    instance_id: str | None = None
    association_id: str | None = None
    tags: Tags = ()


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    region: str
    name: str
    tags: Tags = ()
    # The provider's word: `available` once usable; a copy is `pending` until then.
    state: str = "available"


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What a playbook asks for. `client_token` makes the launch idempotent at the provider:
    a retried launch with the same token returns the same instance, never a second one.

    One logical launch uses one token in every zone it tries: EC2 binds a token to the
    instance it made, and a retry with the same token in another zone returns that
    instance (only a change of parameters other than the zone is refused, with
    `IdempotentParameterMismatch`). A refused attempt binds nothing."""

    region: str
    zone: str
    image_id: str
    client_token: str
    instance_type: str = "t3.micro"
    user_data: str = ""
    tags: Tags = ()


class Inventory(Protocol):
    """Read side: what the provider says exists and how it is."""

    async def ping(self, region: str) -> None:
        """Return when the region's API answers; raise ProviderError when it does not."""

    async def instances(self, region: str) -> list[CloudInstance]:
        """Every instance (any state) with its status checks."""

    async def zones(self, region: str) -> list[ZoneInfo]: ...

    async def volumes(self, region: str) -> list[VolumeInfo]: ...

    async def snapshots(self, region: str) -> list[SnapshotInfo]:
        """Snapshots owned by this account."""

    async def addresses(self, region: str) -> list[AddressInfo]: ...

    async def images(self, region: str) -> list[ImageInfo]:
        """Images owned by this account."""


class Compute(Protocol):
    """Write side: the side effects playbooks make. Every call may raise ProviderError."""

    async def run_instance(self, spec: LaunchSpec) -> str:
        """Launch one instance; returns its id. Idempotent per `spec.client_token`."""

    async def stop_instance(self, region: str, instance_id: str) -> None: ...

    async def terminate_instance(self, region: str, instance_id: str) -> None: ...

    async def associate_address(self, region: str, allocation_id: str, instance_id: str) -> None:
        """Move an Elastic IP to `instance_id` (reassociating it if held elsewhere)."""

    async def create_snapshot(self, region: str, volume_id: str, tags: Tags) -> str:
        """EC2 takes no client token here: callers make it once by tag and journal
        (`drwatch.act.playbooks.common.create_once`)."""

    async def create_volume(
        self,
        region: str,
        zone: str,
        snapshot_id: str,
        tags: Tags,
        size_gib: int | None = None,
        *,
        client_token: str | None = None,
    ) -> str:
        """A volume from a snapshot. Idempotent per `client_token` when one is given."""

    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str:
        """Copy an image into `region`; returns the new image's id. Idempotent per token."""

    async def copy_snapshot(
        self, region: str, source_region: str, snapshot_id: str, tags: Tags
    ) -> str:
        """Copy a snapshot into `region`. No client token at EC2: tag and journal it."""

    async def attach_volume(
        self, region: str, volume_id: str, instance_id: str, device: str
    ) -> None: ...

    async def detach_volume(self, region: str, volume_id: str, instance_id: str) -> None: ...

    async def tag(self, region: str, resource_id: str, tags: Tags) -> None: ...


class Provider(Inventory, Compute, Protocol):
    """Both sides; what the composition root builds."""
