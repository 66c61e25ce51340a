"""What moto says exists, read directly (never through the front), as plain values.

The reconciler refreshes a `CloudView` every poll; hosts, the service address and the
corruption rules read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drwatch.sandbox.cloud import Moto, tags_dict


@dataclass(frozen=True)
class InstanceView:
    id: str
    region: str
    zone: str
    state: str
    image_id: str
    tags: dict[str, str]
    launched_at: float

    @property
    def name(self) -> str:
        return self.tags.get("Name", self.id)


@dataclass(frozen=True)
class VolumeView:
    id: str
    name: str
    zone: str
    snapshot_id: str
    attached_to: tuple[str, ...]


@dataclass(frozen=True)
class SnapshotView:
    id: str
    name: str
    volume_id: str
    started_at: float


@dataclass
class CloudView:
    instances: dict[str, InstanceView] = field(default_factory=dict)
    volumes: dict[str, VolumeView] = field(default_factory=dict)
    snapshots: dict[str, SnapshotView] = field(default_factory=dict)
    # Elastic IP Name tag -> the instance id holding it (None: unassociated)
    addresses: dict[str, str | None] = field(default_factory=dict)
    # A public address -> the instance behind it (Elastic IPs, instances' own addresses).
    public_ips: dict[str, str] = field(default_factory=dict)
    # What the service's public name answers: the values of its PRIMARY failover record
    # (moto has no health checks, so the PRIMARY record is always the answer).
    dns_answer: tuple[str, ...] = ()

    def named(self, name: str) -> InstanceView | None:
        """The current instance with this Name: running first, then the newest not terminated."""
        live = [i for i in self.instances.values() if i.name == name and i.state != "terminated"]
        live.sort(key=lambda i: (i.state == "running", i.launched_at))
        return live[-1] if live else None

    def volume_named(self, name: str) -> VolumeView | None:
        return next((v for v in self.volumes.values() if v.name == name), None)

    def snapshot_named(self, name: str) -> SnapshotView | None:
        return next((s for s in self.snapshots.values() if s.name == name), None)


def describe(moto: Moto, regions: list[str], dns: tuple[str, str] | None = None) -> CloudView:
    """One full read of every region (blocking: run it in a thread); with `dns` (hosted
    zone id, record name), what the public name answers too."""
    view = CloudView()
    for region in regions:
        ec2 = moto.ec2(region)
        for raw_inst in _instances(ec2):
            inst = _instance(region, raw_inst)
            view.instances[inst.id] = inst
            if raw_inst.get("PublicIpAddress") and inst.state != "terminated":
                view.public_ips[raw_inst["PublicIpAddress"]] = inst.id
        for raw in ec2.describe_volumes()["Volumes"]:
            vol = _volume(raw)
            view.volumes[vol.id] = vol
        for raw in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
            snap = _snapshot(raw)
            view.snapshots[snap.id] = snap
        for addr in ec2.describe_addresses()["Addresses"]:
            name = tags_dict(addr.get("Tags")).get("Name", addr["AllocationId"])
            view.addresses[name] = addr.get("InstanceId")
            if addr.get("InstanceId"):
                view.public_ips[addr["PublicIp"]] = addr["InstanceId"]
    if dns is not None:
        view.dns_answer = _dns_answer(moto, *dns)
    return view


def _dns_answer(moto: Moto, zone_id: str, name: str) -> tuple[str, ...]:
    r53 = moto.client("route53", "us-east-1")
    raw = r53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name)
    for rec in raw["ResourceRecordSets"]:
        if rec["Name"] == name and rec.get("Failover") == "PRIMARY":
            return tuple(v["Value"] for v in rec.get("ResourceRecords", []))
    return ()


def _instances(ec2: Any) -> list[dict[str, Any]]:
    out = []
    for page in ec2.get_paginator("describe_instances").paginate():
        for res in page["Reservations"]:
            out.extend(res["Instances"])
    return out


def _instance(region: str, raw: dict[str, Any]) -> InstanceView:
    return InstanceView(
        id=raw["InstanceId"],
        region=region,
        zone=raw["Placement"]["AvailabilityZone"],
        state=raw["State"]["Name"],
        image_id=raw.get("ImageId", ""),
        tags=tags_dict(raw.get("Tags")),
        launched_at=raw["LaunchTime"].timestamp(),
    )


def _volume(raw: dict[str, Any]) -> VolumeView:
    return VolumeView(
        id=raw["VolumeId"],
        name=tags_dict(raw.get("Tags")).get("Name", raw["VolumeId"]),
        zone=raw["AvailabilityZone"],
        snapshot_id=raw.get("SnapshotId") or "",
        attached_to=tuple(a["InstanceId"] for a in raw.get("Attachments", [])),
    )


def _snapshot(raw: dict[str, Any]) -> SnapshotView:
    return SnapshotView(
        id=raw["SnapshotId"],
        name=tags_dict(raw.get("Tags")).get("Name", raw["SnapshotId"]),
        volume_id=raw.get("VolumeId") or "",
        started_at=raw["StartTime"].timestamp(),
    )
