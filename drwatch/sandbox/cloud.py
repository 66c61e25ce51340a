"""moto as the sandbox's AWS: its own process, a boto3 facade, and the seeding of a topology.

moto runs as `moto_server` in a separate process (NOTES.md: in-process moto does not
work with aiobotocore, and moto is GIL-bound). The sandbox talks to it with boto3's
sync client from worker threads; drwatch talks to it through the front.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from drwatch.errors import DrwatchError
from drwatch.logs import get_logger
from drwatch.sandbox.topology import GROUP_TAG, ROLE_TAG, InstanceSpec, Topology

log = get_logger(component="sandbox.cloud")

# Dummy credentials: moto accepts anything, and these can never reach a real account.
CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
DB_DEVICE = "/dev/sdf"


class SandboxError(DrwatchError):
    """The sandbox could not start or do what was asked."""


def moto_binary() -> str:
    """`moto_server` next to this Python first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise SandboxError("moto_server not found: install drwatch[sandbox] (moto[server])")
    return found


class MotoProcess:
    """One `moto_server` on loopback; one per simulated provider."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, deadline_s: float = 20.0) -> None:
        env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
        with self._log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                moto_binary(), "-H", "127.0.0.1", "-p", str(self.port),
                stdout=out, stderr=out, env=env, start_new_session=True,
            )  # fmt: skip
        async with asyncio.timeout(deadline_s), aiohttp.ClientSession() as session:
            while not await _answers(session, f"{self.url}/moto-api/"):
                if self._proc.returncode is not None:
                    raise SandboxError(f"moto_server exited; see {self._log_path}")
                await asyncio.sleep(0.1)
        log.info("moto.start", url=self.url, pid=self._proc.pid)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("moto.stop", url=self.url)


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    """Ready means a 2xx: a server still starting may answer 5xx before it serves."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return 200 <= resp.status < 300
    except (aiohttp.ClientError, TimeoutError):
        return False


class Moto:
    """boto3 clients on one endpoint, cached per (service, region). Call from threads."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = boto3.client(
                service, region_name=region, endpoint_url=self.endpoint, **CREDENTIALS
            )
        return self._clients[key]

    def ec2(self, region: str) -> Any:
        return self.client("ec2", region)


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_dict(raw: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or []}


@dataclass
class Seeded:
    """Ids of what seeding created, by name."""

    images: dict[tuple[str, str], str] = field(default_factory=dict)  # (region, role) -> ami
    instances: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # eip name -> allocation id
    hosted_zone: str | None = None


def seed(moto: Moto, topo: Topology) -> Seeded:
    """Create the topology in moto through its API, as an operator's tooling would."""
    out = Seeded()
    for region in topo.regions:
        for role in sorted({i.role for i in topo.instance} | set()):
            out.images[(region, role.value)] = _register_image(moto.ec2(region), role.value)
    for spec in topo.instance:
        out.instances[spec.name] = _launch(moto.ec2(spec.region), spec, out)
    for spec in topo.instance:
        _seed_storage(moto.ec2(spec.region), spec, out)
        if spec.elastic_ip:
            out.addresses[spec.elastic_ip] = _elastic_ip(moto.ec2(spec.region), spec, out)
    if topo.dns is not None:
        out.hosted_zone = _seed_dns(moto, topo, out)
    log.info("sandbox.seeded", instances=len(out.instances), snapshots=len(out.snapshots))
    return out


def _register_image(ec2: Any, role: str) -> str:
    image: str = ec2.register_image(
        Name=f"drwatch-{role}", Architecture="x86_64", RootDeviceName="/dev/sda1"
    )["ImageId"]
    # moto drops RegisterImage's TagSpecifications (AWS keeps them): tag it again, so the
    # role's image is found by its tag (readiness, and the playbooks' image fallback).
    ec2.create_tags(Resources=[image], Tags=tag_list({ROLE_TAG: role}))
    return image


def _launch(ec2: Any, spec: InstanceSpec, out: Seeded) -> str:
    tags = {"Name": spec.name, GROUP_TAG: spec.group, ROLE_TAG: spec.role.value}
    reply = ec2.run_instances(
        ImageId=out.images[(spec.region, spec.role.value)],
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        Placement={"AvailabilityZone": spec.zone},
        UserData=spec.user_data(),
        ClientToken=f"seed-{spec.name}",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)}],
    )
    instance_id: str = reply["Instances"][0]["InstanceId"]
    return instance_id


def _seed_storage(ec2: Any, spec: InstanceSpec, out: Seeded) -> None:
    if not spec.volume:
        return
    volume = ec2.create_volume(
        AvailabilityZone=spec.zone,
        Size=20,
        TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list({"Name": spec.volume})}],
    )["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=out.instances[spec.name], Device=DB_DEVICE)
    out.volumes[spec.volume] = volume
    for n in range(1, spec.snapshots + 1):
        name = f"{spec.volume}-snap-{n}"
        out.snapshots[name] = ec2.create_snapshot(
            VolumeId=volume,
            Description=name,
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list({"Name": name})}],
        )["SnapshotId"]
        # Distinct start times, so "newest" is unambiguous to whoever sorts by them.
        time.sleep(0.01 if n == spec.snapshots else 1.01)


def _elastic_ip(ec2: Any, spec: InstanceSpec, out: Seeded) -> str:
    assert spec.elastic_ip is not None
    alloc: str = ec2.allocate_address(
        Domain="vpc",
        TagSpecifications=[
            {"ResourceType": "elastic-ip", "Tags": tag_list({"Name": spec.elastic_ip})}
        ],
    )["AllocationId"]
    ec2.associate_address(AllocationId=alloc, InstanceId=out.instances[spec.name])
    return alloc


def _seed_dns(moto: Moto, topo: Topology, out: Seeded) -> str:
    assert topo.dns is not None
    dns = topo.dns
    r53 = moto.client("route53", dns.primary_region)
    zone: str = r53.create_hosted_zone(Name=dns.zone, CallerReference="drwatch-sandbox")[
        "HostedZone"
    ]["Id"]
    changes = [
        _failover_record(dns.record, "PRIMARY", _region_ip(moto, dns.primary_region, out)),
        _failover_record(dns.record, "SECONDARY", _region_ip(moto, dns.secondary_region, out)),
    ]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    return zone


def _failover_record(name: str, role: str, ip: str) -> dict[str, Any]:
    return {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": name,
            "Type": "A",
            "SetIdentifier": role.lower(),
            "Failover": role,
            "TTL": 60,
            "ResourceRecords": [{"Value": ip}],
        },
    }


def _region_ip(moto: Moto, region: str, out: Seeded) -> str:
    """The public address answering for the service in `region`: its EIP, else an LB's IP."""
    ec2 = moto.ec2(region)
    for alloc in out.addresses.values():
        found = ec2.describe_addresses(Filters=[{"Name": "allocation-id", "Values": [alloc]}])
        if found["Addresses"]:
            ip: str = found["Addresses"][0]["PublicIp"]
            return ip
    reply = ec2.describe_instances(
        Filters=[{"Name": f"tag:{ROLE_TAG}", "Values": ["load_balancer"]}]
    )
    for res in reply["Reservations"]:
        for inst in res["Instances"]:
            if inst.get("PublicIpAddress"):
                lb_ip: str = inst["PublicIpAddress"]
                return lb_ip
    return "192.0.2.1"


def user_data_text(ec2: Any, instance_id: str) -> str:
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    value = attr.get("UserData", {}).get("Value")
    if not value:
        return ""
    return base64.b64decode(value).decode("utf-8", "replace")
