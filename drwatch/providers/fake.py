"""`FakeProvider`: an in-memory cloud implementing `Inventory` and `Compute`, for unit tests.

It behaves like AWS where moto does not:

- attaching a volume that is not `available` raises `ProviderError(code="IncorrectState")`;
  attaching across zones raises `ProviderError(code="InvalidVolume.ZoneMismatch")`;
- `run_instance` is idempotent per `client_token`: the same token returns the same id, in
  any zone (EC2 allows the zone to differ); the same token with another image, type or
  user data raises `IdempotentParameterMismatch`. A refused launch binds no token.
  `create_volume` and `copy_image` are idempotent per token likewise;
- a launch needs a known image in the region (`InvalidAMIID.NotFound`) and a known zone;
  it fails with `InsufficientInstanceCapacity` in a zone named by `fail_launches_in` or
  whose state is not `available` (a zone outage);
- terminated instances stay listed (AWS lists them for about an hour) until `forget()`;
  terminating detaches the instance's volumes and releases its Elastic IP association.

State changes are instant (`stop_instance` leaves the instance `stopped` at once) and
observable through the Inventory side. Every Compute call that reaches the API, failed
or not, is appended to `calls` as `(method, region, *arguments)`, so a test can say
"exactly one launch": `fake.count("run_instance") == 1`.

Faults: `fail_launches_in(zone)`, `api_down(region)` (unreachable), `api_fault(region,
error)` (any `ProviderError`, e.g. `ProviderTimeoutError`), `throttle(region, n)` (the next
`n` calls in the region raise `ProviderThrottledError`), `set_zone_state`, `set_state`,
`impair`. `heal()` clears every fault.

Describe lag (EC2 is eventually consistent: a resource just created may be missing from
describe calls for a while): after `lag_describes(n)`, everything a Compute call creates
is absent from the next `n` listings of its kind (instances, volumes, snapshots,
images), or until `reveal()`. Client tokens still find it, as at EC2, which is the
point: a resumed run that trusts describe alone doubles the effect.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from drwatch.errors import ProviderError, ProviderThrottledError, ProviderUnreachableError
from drwatch.model.fleet import InstanceState
from drwatch.providers.base import (
    AddressInfo,
    CloudInstance,
    ImageInfo,
    LaunchSpec,
    SnapshotInfo,
    StatusCheck,
    Tags,
    VolumeInfo,
    ZoneInfo,
)

Call = tuple[str, ...]
_Tagged = TypeVar("_Tagged", CloudInstance, VolumeInfo, SnapshotInfo, AddressInfo, ImageInfo)


@dataclass
class _Region:
    zones: dict[str, str]
    instances: dict[str, CloudInstance] = field(default_factory=dict)
    volumes: dict[str, VolumeInfo] = field(default_factory=dict)
    snapshots: dict[str, SnapshotInfo] = field(default_factory=dict)
    addresses: dict[str, AddressInfo] = field(default_factory=dict)
    images: dict[str, ImageInfo] = field(default_factory=dict)
    # client token -> (resource id, the parameters it was made with, zone excluded)
    tokens: dict[str, tuple[str, tuple[object, ...]]] = field(default_factory=dict)
    fault: ProviderError | None = None
    throttled: int = 0


def _rid(item: CloudInstance | VolumeInfo | SnapshotInfo | AddressInfo | ImageInfo) -> str:
    return item.allocation_id if isinstance(item, AddressInfo) else item.id


def _merge(old: Tags, new: Tags) -> Tags:
    merged = dict(old)
    merged.update(new)
    return tuple(sorted(merged.items()))


def _retag(table: dict[str, _Tagged], resource_id: str, tags: Tags) -> bool:
    old = table.get(resource_id)
    if old is None:
        return False
    table[resource_id] = replace(old, tags=_merge(old.tags, tags))
    return True


class FakeProvider:
    """An in-memory provider. Regions get zones `<region>a`, `b`, `c` unless `zones` is given."""

    def __init__(
        self,
        regions: Iterable[str] = ("us-east-1",),
        *,
        zones: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        wanted = tuple(zones) if zones is not None else None
        self._regions: dict[str, _Region] = {}
        for region in regions:
            names = [z for z in wanted if z.startswith(region)] if wanted else None
            names = names or [f"{region}{s}" for s in "abc"]
            self._regions[region] = _Region(zones=dict.fromkeys(names, "available"))
        self._clock = clock
        self._ids = itertools.count(1)
        self._failing_zones: set[str] = set()
        self._lag = 0
        self._hidden: dict[str, int] = {}  # resource id -> listings it is still missing from
        self.calls: list[Call] = []
        # Calls (also in `calls`) that made nothing: launches refused for capacity, and
        # retries whose client token returned what an earlier call made.
        self.refused: list[Call] = []
        self.replayed: list[Call] = []

    # -- test helpers: counting, faults, seeding ----------------------------------------

    def count(self, method: str) -> int:
        """How many times a Compute method was called (failed calls included)."""
        return sum(1 for c in self.calls if c[0] == method)

    def fail_launches_in(self, zone: str) -> None:
        self._failing_zones.add(zone)

    def api_down(self, region: str) -> None:
        self.api_fault(region, ProviderUnreachableError(f"{region}: connection refused"))

    def api_fault(self, region: str, error: ProviderError) -> None:
        """Every call in `region` raises `error` until `heal()`."""
        self._region(region).fault = error

    def throttle(self, region: str, n: int) -> None:
        """The next `n` calls in `region` raise ProviderThrottledError."""
        self._region(region).throttled = n

    def lag_describes(self, listings: int) -> None:
        """From now on, what Compute creates is missing from the next `listings` listings
        of its kind."""
        self._lag = listings

    def reveal(self) -> None:
        """The describe lag is over: everything created shows, and new things at once."""
        self._lag = 0
        self._hidden.clear()

    def heal(self) -> None:
        """Clear every fault knob (API faults, throttling, failing launches)."""
        self._failing_zones.clear()
        for r in self._regions.values():
            r.fault, r.throttled = None, 0

    def set_zone_state(self, zone: str, state: str) -> None:
        self._region(self._zone_region(zone)).zones[zone] = state

    def set_state(self, instance_id: str, state: InstanceState) -> None:
        self._put_instance(replace(self._find_instance(instance_id), state=state))

    def impair(
        self, instance_id: str, *, system: bool = True, instance: bool = True, ok: bool = False
    ) -> None:
        """Set the status checks to impaired (or back to ok with `ok=True`)."""
        check = StatusCheck.OK if ok else StatusCheck.IMPAIRED
        old = self._find_instance(instance_id)
        self._put_instance(
            replace(
                old,
                system_status=check if system else old.system_status,
                instance_status=check if instance else old.instance_status,
            )
        )

    def forget(self, instance_id: str) -> None:
        """The provider stops listing an instance (AWS does so about an hour after termination)."""
        inst = self._find_instance(instance_id)
        del self._regions[inst.region].instances[instance_id]

    def add_instance(
        self,
        region: str,
        zone: str,
        *,
        name: str | None = None,
        tags: Tags = (),
        state: InstanceState = InstanceState.RUNNING,
        image_id: str | None = None,
        instance_id: str | None = None,
    ) -> CloudInstance:
        """Seed an instance (no call recorded). `name` becomes the Name tag."""
        self._check_zone(region, zone)
        all_tags = _merge(tags, (("Name", name),) if name else ())
        n = next(self._ids)
        inst = CloudInstance(
            id=instance_id or f"i-{n:017x}",
            region=region,
            zone=zone,
            state=state,
            private_ip=f"10.0.{n // 250}.{n % 250 + 4}",
            image_id=image_id,
            instance_type="t3.micro",
            tags=all_tags,
            launched_at=self._clock(),
        )
        self._put_instance(inst)
        return inst

    def add_volume(
        self,
        region: str,
        zone: str,
        *,
        size_gib: int = 8,
        tags: Tags = (),
        attached_to: str | None = None,
        device: str = "/dev/sdf",
        snapshot_id: str | None = None,
    ) -> VolumeInfo:
        self._check_zone(region, zone)
        vol = VolumeInfo(
            id=f"vol-{next(self._ids):017x}",
            region=region,
            zone=zone,
            state="available",
            size_gib=size_gib,
            snapshot_id=snapshot_id,
            tags=tuple(sorted(tags)),
        )
        self._region(region).volumes[vol.id] = vol
        if attached_to is not None:
            self._attach(region, vol.id, attached_to, device)
        return self._region(region).volumes[vol.id]

    def add_snapshot(
        self,
        region: str,
        volume_id: str | None,
        *,
        tags: Tags = (),
        started_at: float | None = None,
        state: str = "completed",
    ) -> SnapshotInfo:
        snap = SnapshotInfo(
            id=f"snap-{next(self._ids):017x}",
            region=region,
            volume_id=volume_id,
            state=state,
            started_at=self._clock() if started_at is None else started_at,
            tags=tuple(sorted(tags)),
        )
        self._region(region).snapshots[snap.id] = snap
        return snap

    def add_address(
        self, region: str, *, tags: Tags = (), instance_id: str | None = None
    ) -> AddressInfo:
        n = next(self._ids)
        addr = AddressInfo(
            allocation_id=f"eipalloc-{n:017x}",
            region=region,
            public_ip=f"198.51.100.{n % 250 + 1}",
            tags=tuple(sorted(tags)),
        )
        self._region(region).addresses[addr.allocation_id] = addr
        if instance_id is not None:
            self._associate(region, addr.allocation_id, instance_id)
        return self._region(region).addresses[addr.allocation_id]

    def add_image(self, region: str, name: str, *, tags: Tags = ()) -> ImageInfo:
        image = ImageInfo(
            id=f"ami-{next(self._ids):017x}", region=region, name=name, tags=tuple(sorted(tags))
        )
        self._region(region).images[image.id] = image
        return image

    # -- Inventory ----------------------------------------------------------------------

    async def ping(self, region: str) -> None:
        self._enter(region)

    async def instances(self, region: str) -> list[CloudInstance]:
        return self._shown(self._enter(region).instances.values())

    async def zones(self, region: str) -> list[ZoneInfo]:
        zones = self._enter(region).zones
        return [ZoneInfo(name=z, region=region, state=s) for z, s in zones.items()]

    async def volumes(self, region: str) -> list[VolumeInfo]:
        return self._shown(self._enter(region).volumes.values())

    async def snapshots(self, region: str) -> list[SnapshotInfo]:
        return self._shown(self._enter(region).snapshots.values())

    async def addresses(self, region: str) -> list[AddressInfo]:
        return list(self._enter(region).addresses.values())

    async def images(self, region: str) -> list[ImageInfo]:
        return self._shown(self._enter(region).images.values())

    # -- Compute ------------------------------------------------------------------------

    async def run_instance(self, spec: LaunchSpec) -> str:
        self.calls.append(("run_instance", spec.region, spec.zone, spec.client_token))
        r = self._enter(spec.region)
        same = (spec.image_id, spec.instance_type, spec.user_data)
        known = self._by_token(r, spec.client_token, same)
        if known is not None:
            return known
        self._check_zone(spec.region, spec.zone)
        if spec.image_id not in r.images:
            raise ProviderError(f"{spec.image_id} does not exist", code="InvalidAMIID.NotFound")
        if spec.zone in self._failing_zones or r.zones[spec.zone] != "available":
            self.refused.append(self.calls[-1])
            raise ProviderError(
                f"no capacity in {spec.zone}", code="InsufficientInstanceCapacity", retryable=True
            )
        inst = self.add_instance(spec.region, spec.zone, tags=spec.tags, image_id=spec.image_id)
        return self._made(r, inst.id, spec.client_token, same)

    async def stop_instance(self, region: str, instance_id: str) -> None:
        self.calls.append(("stop_instance", region, instance_id))
        r = self._enter(region)
        inst = self._instance(r, instance_id)
        if inst.state is InstanceState.TERMINATED:
            raise ProviderError(f"{instance_id} is terminated", code="IncorrectInstanceState")
        # A stopped instance keeps its Elastic IP (VPC); only an ephemeral public IP goes.
        keeps_eip = any(a.instance_id == instance_id for a in r.addresses.values())
        public_ip = inst.public_ip if keeps_eip else None
        self._put_instance(replace(inst, state=InstanceState.STOPPED, public_ip=public_ip))

    async def terminate_instance(self, region: str, instance_id: str) -> None:
        self.calls.append(("terminate_instance", region, instance_id))
        r = self._enter(region)
        inst = self._instance(r, instance_id)
        for vol_id in inst.volumes:
            self._detach(region, vol_id)
        for addr in list(r.addresses.values()):
            if addr.instance_id == instance_id:
                r.addresses[addr.allocation_id] = replace(
                    addr, instance_id=None, association_id=None
                )
        self._put_instance(
            replace(self._instance(r, instance_id), state=InstanceState.TERMINATED, public_ip=None)
        )

    async def associate_address(self, region: str, allocation_id: str, instance_id: str) -> None:
        self.calls.append(("associate_address", region, allocation_id, instance_id))
        self._enter(region)
        self._associate(region, allocation_id, instance_id)

    async def create_snapshot(self, region: str, volume_id: str, tags: Tags) -> str:
        self.calls.append(("create_snapshot", region, volume_id))
        r = self._enter(region)
        self._volume(r, volume_id)
        return self._made(r, self.add_snapshot(region, volume_id, tags=tags).id)

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
        self.calls.append(("create_volume", region, zone, snapshot_id))
        r = self._enter(region)
        known = self._by_token(r, client_token, (snapshot_id, size_gib))
        if known is not None:
            return known
        snap = r.snapshots.get(snapshot_id)
        if snap is None:
            raise ProviderError(f"{snapshot_id} does not exist", code="InvalidSnapshot.NotFound")
        if snap.state != "completed":
            raise ProviderError(f"{snapshot_id} is {snap.state}", code="IncorrectState")
        source = r.volumes.get(snap.volume_id or "")
        size = size_gib or (source.size_gib if source else 8)
        vol = self.add_volume(region, zone, size_gib=size, tags=tags, snapshot_id=snapshot_id)
        return self._made(r, vol.id, client_token, (snapshot_id, size_gib))

    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str:
        self.calls.append(("copy_image", region, source_region, image_id))
        r = self._enter(region)
        known = self._by_token(r, client_token, (source_region, image_id, name))
        if known is not None:
            return known
        source = self._enter(source_region).images.get(image_id)
        if source is None:
            raise ProviderError(f"{image_id} does not exist", code="InvalidAMIID.NotFound")
        image = self.add_image(region, name, tags=source.tags)
        return self._made(r, image.id, client_token, (source_region, image_id, name))

    async def copy_snapshot(
        self, region: str, source_region: str, snapshot_id: str, tags: Tags
    ) -> str:
        self.calls.append(("copy_snapshot", region, source_region, snapshot_id))
        r = self._enter(region)
        source = self._enter(source_region).snapshots.get(snapshot_id)
        if source is None:
            raise ProviderError(f"{snapshot_id} does not exist", code="InvalidSnapshot.NotFound")
        return self._made(r, self.add_snapshot(region, None, tags=tags).id)

    async def attach_volume(
        self, region: str, volume_id: str, instance_id: str, device: str
    ) -> None:
        self.calls.append(("attach_volume", region, volume_id, instance_id, device))
        self._enter(region)
        self._attach(region, volume_id, instance_id, device)

    async def detach_volume(self, region: str, volume_id: str, instance_id: str) -> None:
        self.calls.append(("detach_volume", region, volume_id, instance_id))
        vol = self._volume(self._enter(region), volume_id)
        if vol.attached_to != instance_id:
            raise ProviderError(
                f"{volume_id} is not attached to {instance_id}", code="InvalidAttachment.NotFound"
            )
        self._detach(region, volume_id)

    async def tag(self, region: str, resource_id: str, tags: Tags) -> None:
        self.calls.append(("tag", region, resource_id))
        r = self._enter(region)
        found = (
            _retag(r.instances, resource_id, tags)
            or _retag(r.volumes, resource_id, tags)
            or _retag(r.snapshots, resource_id, tags)
            or _retag(r.addresses, resource_id, tags)
            or _retag(r.images, resource_id, tags)
        )
        if not found:
            raise ProviderError(f"{resource_id} does not exist", code="InvalidID")

    # -- internals ------------------------------------------------------------------------

    def _by_token(self, r: _Region, token: str | None, same: tuple[object, ...]) -> str | None:
        """What an earlier call with this token made; a mismatch of parameters is refused."""
        if token is None or token not in r.tokens:
            return None
        made, params = r.tokens[token]
        self.replayed.append(self.calls[-1])
        if params != same:
            raise ProviderError(
                f"client token {token} was used with other parameters",
                code="IdempotentParameterMismatch",
            )
        return made

    def _made(
        self, r: _Region, resource_id: str, token: str | None = None, same: tuple[object, ...] = ()
    ) -> str:
        if token is not None:
            r.tokens[token] = (resource_id, same)
        if self._lag > 0:
            self._hidden[resource_id] = self._lag
        return resource_id

    def _shown(self, items: Iterable[_Tagged]) -> list[_Tagged]:
        shown = []
        for item in items:
            rid = _rid(item)
            if rid not in self._hidden:
                shown.append(item)
            elif self._hidden[rid] <= 1:
                del self._hidden[rid]  # missing from this listing, present in the next
            else:
                self._hidden[rid] -= 1
        return shown

    def _region(self, region: str) -> _Region:
        r = self._regions.get(region)
        if r is None:
            raise ProviderUnreachableError(f"{region}: no such region endpoint")
        return r

    def _enter(self, region: str) -> _Region:
        """Every API call passes here: the region's faults apply before anything happens."""
        r = self._region(region)
        if r.fault is not None:
            raise r.fault
        if r.throttled > 0:
            r.throttled -= 1
            raise ProviderThrottledError(f"{region}: Rate exceeded", code="RequestLimitExceeded")
        return r

    def _zone_region(self, zone: str) -> str:
        for name, r in self._regions.items():
            if zone in r.zones:
                return name
        raise ProviderError(f"{zone} is not a known zone", code="InvalidParameterValue")

    def _check_zone(self, region: str, zone: str) -> None:
        if zone not in self._region(region).zones:
            raise ProviderError(f"{zone} is not a zone of {region}", code="InvalidParameterValue")

    def _find_instance(self, instance_id: str) -> CloudInstance:
        for r in self._regions.values():
            if instance_id in r.instances:
                return r.instances[instance_id]
        raise ProviderError(f"{instance_id} does not exist", code="InvalidInstanceID.NotFound")

    def _instance(self, r: _Region, instance_id: str) -> CloudInstance:
        inst = r.instances.get(instance_id)
        if inst is None:
            raise ProviderError(f"{instance_id} does not exist", code="InvalidInstanceID.NotFound")
        return inst

    def _volume(self, r: _Region, volume_id: str) -> VolumeInfo:
        vol = r.volumes.get(volume_id)
        if vol is None:
            raise ProviderError(f"{volume_id} does not exist", code="InvalidVolume.NotFound")
        return vol

    def _put_instance(self, inst: CloudInstance) -> None:
        self._regions[inst.region].instances[inst.id] = inst

    def _attach(self, region: str, volume_id: str, instance_id: str, device: str) -> None:
        r = self._region(region)
        vol, inst = self._volume(r, volume_id), self._instance(r, instance_id)
        if vol.state != "available":
            raise ProviderError(
                f"{volume_id} is {vol.state} (attached to {vol.attached_to})",
                code="IncorrectState",
            )
        if vol.zone != inst.zone:
            raise ProviderError(
                f"{volume_id} is in {vol.zone}, {instance_id} in {inst.zone}",
                code="InvalidVolume.ZoneMismatch",
            )
        if inst.state is InstanceState.TERMINATED:
            raise ProviderError(f"{instance_id} is terminated", code="IncorrectInstanceState")
        r.volumes[volume_id] = replace(vol, state="in-use", attached_to=instance_id, device=device)
        self._put_instance(replace(inst, volumes=(*inst.volumes, volume_id)))

    def _detach(self, region: str, volume_id: str) -> None:
        r = self._region(region)
        vol = self._volume(r, volume_id)
        if vol.attached_to is not None and vol.attached_to in r.instances:
            inst = r.instances[vol.attached_to]
            self._put_instance(
                replace(inst, volumes=tuple(v for v in inst.volumes if v != volume_id))
            )
        r.volumes[volume_id] = replace(vol, state="available", attached_to=None, device=None)

    def _associate(self, region: str, allocation_id: str, instance_id: str) -> None:
        r = self._region(region)
        addr = r.addresses.get(allocation_id)
        if addr is None:
            raise ProviderError(
                f"{allocation_id} does not exist", code="InvalidAllocationID.NotFound"
            )
        inst = self._instance(r, instance_id)
        if inst.state is InstanceState.TERMINATED:
            raise ProviderError(f"{instance_id} is terminated", code="IncorrectInstanceState")
        if addr.instance_id and addr.instance_id in r.instances:
            holder = r.instances[addr.instance_id]
            self._put_instance(replace(holder, public_ip=None))
        r.addresses[allocation_id] = replace(
            addr, instance_id=instance_id, association_id=f"eipassoc-{next(self._ids):017x}"
        )
        self._put_instance(replace(self._instance(r, instance_id), public_ip=addr.public_ip))
