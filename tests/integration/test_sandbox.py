"""The sandbox's own surfaces under every fault verb, without the daemon.

One sandbox (real moto_server, the front, real agents over simulated hosts) serves the
whole module. Each test injects a fault, checks that exactly the right layer of exactly
the right targets turns down or silent (moto's view through the front, agent and app
answers), then heals and checks that they come back. Tests use distinct targets so
they do not disturb each other; terminate-instance takes app-6 for good.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.config
import botocore.exceptions
import pytest
import pytest_asyncio

from drwatch.agent import wire
from drwatch.sandbox import control
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.faults import Fault
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, Sandbox
from tests.support.services import need_binary

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

BOOT_DELAY = 1.0
REFUSED, TIMEOUT = "refused", "timeout"
BOTO = botocore.config.Config(
    retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2, tcp_keepalive=False
)


class World:
    """The sandbox under test and small probes of its surfaces."""

    def __init__(self, sb: Sandbox, chaos: Chaos, session: aiohttp.ClientSession) -> None:
        self.sb = sb
        self.chaos = chaos
        self.session = session

    async def do(self, verb: str, target: str, **params: float) -> str:
        return await self.chaos.do(Fault(verb, target, dict(params)))

    def host(self, name: str) -> Any:
        host = self.sb.host_named(name)
        assert host is not None, name
        return host

    async def app(self, name: str, wait: float = 1.0) -> int | str:
        """The app's /healthz status code, or refused / timeout (or absent: no such host)."""
        if self.sb.host_named(name) is None:
            return "absent"
        return await self.get(f"http://{self.host(name).app_addr}/healthz", wait)

    async def get(self, url: str, wait: float = 1.0) -> int | str:
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=wait)) as r:
                await r.read()
                return r.status
        except TimeoutError:
            return TIMEOUT
        except aiohttp.ClientError:
            return REFUSED

    async def facts(self, name: str, wait: float = 1.0) -> dict[str, Any] | str:
        """The agent's signed facts, or refused / timeout."""
        path = wire.FACTS_PATH
        host = self.host(name)
        key = wire.derive_host_secret(self.sb.secret, host.instance_id)
        headers = wire.signed_headers(
            key, "GET", path, b"", now=time.time(), target=host.instance_id
        )
        url = f"http://{host.agent_addr}{path}"
        try:
            async with self.session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=wait)
            ) as r:
                assert r.status == 200, r.status
                return wire.facts_to_dict(wire.decode_facts(await r.read()))
        except TimeoutError:
            return TIMEOUT
        except aiohttp.ClientError:
            return REFUSED

    async def action(self, name: str, action: str, params: dict[str, str]) -> dict[str, object]:
        path = wire.ACTIONS_PATH.format(name=action)
        body = wire.encode_action_request(params)
        host = self.host(name)
        key = wire.derive_host_secret(self.sb.secret, host.instance_id)
        headers = wire.signed_headers(
            key, "POST", path, body, now=time.time(), target=host.instance_id
        )
        async with self.session.post(
            f"http://{host.agent_addr}{path}", data=body, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            return wire.decode_action_result(await r.read())

    def ec2(self, region: str = "us-east-1") -> Any:
        """A boto3 EC2 client through the front, as drwatch sees the provider."""
        return boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=self.sb.front.endpoint(region),
            aws_access_key_id="t",
            aws_secret_access_key="t",
            config=BOTO,
        )

    async def call(self, region: str, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.ec2(region), method), **kwargs)

    async def error_code(self, region: str, method: str, **kwargs: Any) -> str:
        try:
            await self.call(region, method, **kwargs)
        except botocore.exceptions.ClientError as err:
            return str(err.response["Error"]["Code"])
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError):
            return REFUSED
        except botocore.exceptions.ReadTimeoutError:
            return TIMEOUT
        return "ok"

    async def state(self, name: str, region: str = "us-east-1") -> str:
        reply = await self.call(
            region, "describe_instances", InstanceIds=[self.sb.seeded.instances[name]]
        )
        return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])

    async def statuses(self, region: str = "us-east-1") -> dict[str, str]:
        reply = await self.call(region, "describe_instance_status", IncludeAllInstances=True)
        ids = {v: k for k, v in self.sb.seeded.instances.items()}
        return {
            ids.get(s["InstanceId"], s["InstanceId"]): s["InstanceStatus"]["Status"]
            for s in reply["InstanceStatuses"]
        }

    async def zones(self, region: str = "us-east-1") -> dict[str, str]:
        reply = await self.call(region, "describe_availability_zones")
        return {z["ZoneName"]: z["State"] for z in reply["AvailabilityZones"]}


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 15.0) -> None:
    """Poll `check` until it holds; fail after the deadline."""
    async with asyncio.timeout(deadline):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    need_binary("moto_server", str(Path(sys.executable).parent))
    state = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(default_topology(), state, Options(boot_delay_s=BOOT_DELAY, with_watcher=False))
    chaos = control.attach(sb)
    async with sb, aiohttp.ClientSession() as session:
        yield World(sb, chaos, session)


async def test_the_default_topology_is_seeded_and_answering(world: World) -> None:
    """Every contract name exists in moto with its zone and tags, and every host answers."""
    topo = default_topology()
    await world.sb.poll()  # a fresh read: the address tags were added after the first one
    for spec in topo.instance:
        inst = world.sb.view.named(spec.name)
        assert inst is not None
        assert inst.zone == spec.zone
        assert inst.state == "running"
        assert inst.tags["drwatch:group"] == spec.group
        assert inst.tags["drwatch:role"] == spec.role.value
        assert inst.tags["drwatch:agent-addr"] == world.host(spec.name).agent_addr
        assert await world.app(spec.name) == 200
        assert isinstance(await world.facts(spec.name), dict)
    assert world.sb.view.addresses["web-eip"] == world.sb.seeded.instances["lb-1"]
    snaps = sorted(
        (s for s in world.sb.view.snapshots.values() if s.name.startswith("db-1-data")),
        key=lambda s: s.started_at,
    )
    assert [s.name for s in snaps] == ["db-1-data-snap-1", "db-1-data-snap-2", "db-1-data-snap-3"]
    assert len(world.sb.seeded.images) == 6  # 3 roles x 2 regions


async def test_stop_instance_silences_only_that_instance_and_heal_restarts_it(
    world: World,
) -> None:
    """stop-instance: moto says stopped, its agent and app refuse; heal boots it again."""
    await world.do("stop-instance", "app-3")
    assert await world.state("app-3") == "stopped"
    assert await world.app("app-3") == REFUSED
    assert await world.facts("app-3") == REFUSED
    assert await world.app("app-4") == 200
    await world.do("heal", "app-3")
    assert await world.state("app-3") == "running"
    await eventually(lambda: _is(world.app("app-3"), 200))
    assert isinstance(await world.facts("app-3"), dict)


async def test_impair_instance_fails_status_checks_and_silences_it(world: World) -> None:
    """impair-instance: status checks impaired at the front, agent and app silent."""
    await world.do("impair-instance", "app-1")
    statuses = await world.statuses()
    assert statuses["app-1"] == "impaired"
    assert {s for n, s in statuses.items() if n != "app-1"} == {"ok"}
    assert await world.state("app-1") == "running"
    assert await world.app("app-1") == REFUSED
    assert await world.facts("app-1") == REFUSED
    await world.do("heal", "app-1")
    assert (await world.statuses())["app-1"] == "ok"
    assert await world.app("app-1") == 200


async def test_kill_agent_silences_the_agent_only(world: World) -> None:
    """kill-agent: the agent refuses, the app still answers; heal brings the agent back."""
    await world.do("kill-agent", "app-2")
    assert await world.facts("app-2") == REFUSED
    assert await world.app("app-2") == 200
    await world.do("heal", "app-2")
    assert isinstance(await world.facts("app-2"), dict)


async def test_fail_app_answers_500(world: World) -> None:
    """fail-app: /healthz answers 500 while the agent is fine; heal: 200."""
    await world.do("fail-app", "app-4")
    assert await world.app("app-4") == 500
    assert isinstance(await world.facts("app-4"), dict)
    await world.do("heal", "app-4")
    assert await world.app("app-4") == 200


async def test_hang_app_accepts_and_never_answers(world: World) -> None:
    """hang-app: the request times out (unknown, not refused); heal answers again."""
    await world.do("hang-app", "app-5")
    assert await world.app("app-5", wait=0.5) == TIMEOUT
    assert await world.app("app-3") == 200
    await world.do("heal", "app-5")
    assert await world.app("app-5") == 200


async def test_slow_app_answers_after_its_delay(world: World) -> None:
    """slow-app: a client that waits less than the delay times out; one that waits more gets 200."""
    await world.do("slow-app", "app-4", delay=1.0)
    assert await world.app("app-4", wait=0.3) == TIMEOUT
    assert await world.app("app-4", wait=5.0) == 200
    await world.do("heal", "app-4")
    assert await world.app("app-4", wait=0.3) == 200


async def test_flap_app_alternates(world: World) -> None:
    """flap-app: within a few periods the app answers both 200 and 500; heal: steady 200."""
    await world.do("flap-app", "app-3", period=0.3)
    seen: set[int | str] = set()

    async def both() -> bool:
        seen.add(await world.app("app-3"))
        return {200, 500} <= seen

    await eventually(both, deadline=10)
    await world.do("heal", "app-3")
    assert [await world.app("app-3") for _ in range(5)] == [200] * 5


async def test_fill_disk_shows_in_the_agent_facts(world: World) -> None:
    """fill-disk: the agent reports the disk at the given percent; heal: back to normal."""
    await world.do("fill-disk", "db-2", percent=97)
    facts = await world.facts("db-2")
    assert isinstance(facts, dict)
    assert facts["disks"]["/"]["used_percent"] == 97
    other = await world.facts("db-1")
    assert isinstance(other, dict)
    assert other["disks"]["/"]["used_percent"] < 90
    await world.do("heal", "db-2")
    facts = await world.facts("db-2")
    assert isinstance(facts, dict)
    assert facts["disks"]["/"]["used_percent"] < 90


async def test_grow_disk_fills_steadily_in_the_agent_facts(world: World) -> None:
    """grow-disk: the disk's use rises from where it was at `rate` percent per minute
    (60 %/min: a percent a second); heal stops it."""
    await world.do("grow-disk", "db-2", rate=60)
    first = await world.facts("db-2")
    assert isinstance(first, dict)

    async def grew() -> bool:
        now = await world.facts("db-2")
        return isinstance(now, dict) and (
            now["disks"]["/"]["used_percent"] >= first["disks"]["/"]["used_percent"] + 2
        )

    await eventually(grew)
    await world.do("heal", "db-2")
    facts = await world.facts("db-2")
    assert isinstance(facts, dict)
    assert facts["disks"]["/"]["used_percent"] == 35


async def test_zone_outage_impairs_the_zone_silences_it_and_refuses_launches(
    world: World,
) -> None:
    """zone-outage: the zone is impaired, its instances silent, launches there fail."""
    await world.do("zone-outage", "us-east-1c")
    assert (await world.zones())["us-east-1c"] == "impaired"
    assert (await world.zones())["us-east-1b"] == "available"
    assert await world.app("app-5") == REFUSED
    assert await world.facts("app-5") == REFUSED
    assert await world.app("app-3") == 200
    image = world.sb.seeded.images[("us-east-1", "app_server")]
    code = await world.error_code(
        "us-east-1", "run_instances", ImageId=image, MinCount=1, MaxCount=1,
        Placement={"AvailabilityZone": "us-east-1c"},
    )  # fmt: skip
    assert code == "InsufficientInstanceCapacity"
    await world.do("heal", "us-east-1c")
    assert (await world.zones())["us-east-1c"] == "available"
    assert await world.app("app-5") == 200


async def test_region_outage_refuses_the_api_and_silences_the_region(world: World) -> None:
    """region-outage: the region's API refuses connections and its instances go silent."""
    await world.do("region-outage", "eu-west-1")
    assert await world.error_code("eu-west-1", "describe_instances") == REFUSED
    assert await world.app("app-eu-1") == REFUSED
    assert await world.facts("db-3") == REFUSED
    assert await world.error_code("us-east-1", "describe_instances") == "ok"
    assert await world.app("app-1") == 200
    await world.do("heal", "eu-west-1")
    assert await world.error_code("eu-west-1", "describe_instances") == "ok"
    assert await world.app("app-eu-1") == 200


async def test_api_outage_fails_the_api_while_instances_answer(world: World) -> None:
    """api-outage: the API answers 503 ServiceUnavailable; every instance still answers."""
    await world.do("api-outage", "us-east-1")
    assert await world.error_code("us-east-1", "describe_instances") == "ServiceUnavailable"
    assert await world.error_code("eu-west-1", "describe_instances") == "ok"
    assert await world.app("app-1") == 200
    await world.do("heal", "us-east-1")
    assert await world.error_code("us-east-1", "describe_instances") == "ok"


async def test_throttle_api_answers_request_limit_exceeded(world: World) -> None:
    """throttle-api: EC2 calls fail with RequestLimitExceeded; heal: they succeed."""
    await world.do("throttle-api", "us-east-1")
    code = await world.error_code("us-east-1", "describe_instance_status")
    assert code == "RequestLimitExceeded"
    await world.do("heal", "us-east-1")
    assert await world.error_code("us-east-1", "describe_instance_status") == "ok"


async def test_cut_uplink_hangs_everything_drwatch_talks_to(world: World) -> None:
    """cut-uplink: canaries, apps, agents and the API all stop answering; heal: all answer."""
    await world.do("cut-uplink", "watcher")
    canaries = list(world.sb.canary_urls().values())
    assert [await world.get(u, wait=0.3) for u in canaries] == [TIMEOUT, TIMEOUT]
    assert await world.app("app-1", wait=0.3) == TIMEOUT
    assert await world.facts("db-1", wait=0.3) == TIMEOUT
    assert await world.error_code("us-east-1", "describe_instances") == TIMEOUT
    await world.do("heal", "watcher")
    assert [await world.get(u) for u in canaries] == [200, 200]
    assert await world.app("app-1") == 200
    assert await world.error_code("us-east-1", "describe_instances") == "ok"


async def test_fail_launches_refuses_one_zone_and_launches_boot_elsewhere(
    world: World,
) -> None:
    """fail-launches: RunInstances fails in that zone only; an instance launched in
    another zone boots after the delay with an agent, an app and its UserData."""
    await world.do("fail-launches", "us-east-1b")
    image = world.sb.seeded.images[("us-east-1", "app_server")]
    launch = {"ImageId": image, "MinCount": 1, "MaxCount": 1}
    code = await world.error_code(
        "us-east-1", "run_instances", **launch, Placement={"AvailabilityZone": "us-east-1b"}
    )
    assert code == "InsufficientInstanceCapacity"
    tags = [{"Key": "Name", "Value": "app-7"}, {"Key": "drwatch:role", "Value": "app_server"}]
    reply = await world.call(
        "us-east-1", "run_instances", **launch, Placement={"AvailabilityZone": "us-east-1a"},
        UserData="DRWATCH_DB=db-2\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    assert reply["Instances"][0]["Placement"]["AvailabilityZone"] == "us-east-1a"
    await eventually(lambda: _is(world.app("app-7"), 200))
    async with world.session.get(f"http://{world.host('app-7').app_addr}/healthz") as r:
        assert (await r.json())["database"] == "db-2"
    await world.do("heal", "us-east-1b")
    assert await world.error_code(
        "us-east-1", "run_instances", **launch, Placement={"AvailabilityZone": "us-east-1b"}
    ) == "ok"  # fmt: skip


async def test_corrupt_volume_makes_the_mounting_database_report_corrupt(world: World) -> None:
    """corrupt-volume: db-1 (which mounts db-1-data) reports corrupt; db-2 does not."""
    await world.do("corrupt-volume", "db-1-data")
    assert await _integrity(world, "db-1") == "corrupt"
    assert await _integrity(world, "db-2") == "ok"
    await world.do("heal", "db-1-data")
    assert await _integrity(world, "db-1") == "ok"


async def test_corrupt_snapshot_taints_volumes_restored_from_it(world: World) -> None:
    """corrupt-snapshot: a database that mounts a volume made from it reports corrupt."""
    await world.do("corrupt-snapshot", "db-1-data-snap-3")
    snap = world.sb.seeded.snapshots["db-1-data-snap-3"]
    image = world.sb.seeded.images[("us-east-1", "database")]
    tags = [{"Key": "Name", "Value": "db-restored"}]
    reply = await world.call(
        "us-east-1", "run_instances", ImageId=image, MinCount=1, MaxCount=1,
        Placement={"AvailabilityZone": "us-east-1a"}, UserData="DRWATCH_DB_ROLE=primary\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    vol = await world.call(
        "us-east-1", "create_volume", AvailabilityZone="us-east-1a", SnapshotId=snap
    )
    await world.call(
        "us-east-1", "attach_volume", VolumeId=vol["VolumeId"],
        InstanceId=reply["Instances"][0]["InstanceId"], Device="/dev/sdf",
    )  # fmt: skip
    await eventually(lambda: _is(_integrity(world, "db-restored"), "corrupt"))
    assert await _integrity(world, "db-1") == "ok"
    await world.do("heal", "db-1-data-snap-3")
    assert await _integrity(world, "db-restored") == "ok"


async def test_moving_the_elastic_ip_moves_the_service_address(world: World) -> None:
    """The service address answers through whichever LB holds web-eip."""
    svc = world.sb.service_url
    async with world.session.get(svc) as r:
        assert (await r.json())["via"] == "lb-1"
    alloc = world.sb.seeded.addresses["web-eip"]
    lb2 = world.sb.seeded.instances["lb-2"]
    await world.call(
        "us-east-1",
        "associate_address",
        AllocationId=alloc,
        InstanceId=lb2,
        AllowReassociation=True,
    )

    async def via_lb2() -> bool:
        async with world.session.get(svc) as r:
            return r.status == 200 and (await r.json())["via"] == "lb-2"

    await eventually(via_lb2)
    lb1 = world.sb.seeded.instances["lb-1"]
    await world.call(
        "us-east-1",
        "associate_address",
        AllocationId=alloc,
        InstanceId=lb1,
        AllowReassociation=True,
    )


async def test_switching_the_dns_record_moves_the_service_address(world: World) -> None:
    """The service address follows the public name's PRIMARY record (Route 53, through
    the front's own listener): pointed at lb-eu-1's address, the service answers from
    eu-west-1; pointed back, from lb-1 again."""
    assert world.sb.topo.dns is not None
    r53 = boto3.client(
        "route53",
        region_name="us-east-1",
        endpoint_url=world.sb.front.endpoint("route53"),
        aws_access_key_id="t",
        aws_secret_access_key="t",
        config=BOTO,
    )
    zone, name = world.sb.seeded.hosted_zone, world.sb.topo.dns.record
    listed = await asyncio.to_thread(
        r53.list_resource_record_sets, HostedZoneId=zone, StartRecordName=name
    )
    sets = {r.get("Failover"): r for r in listed["ResourceRecordSets"] if r["Name"] == name}
    primary, secondary = sets["PRIMARY"], sets["SECONDARY"]

    async def point_primary_at(values: list[dict[str, str]]) -> None:
        change = {"Action": "UPSERT", "ResourceRecordSet": {**primary, "ResourceRecords": values}}
        await asyncio.to_thread(
            r53.change_resource_record_sets, HostedZoneId=zone, ChangeBatch={"Changes": [change]}
        )

    async def answered_by(lb: str) -> bool:
        found = await world.sb.probe_service()
        return bool(found["ok"]) and found["via"] == lb

    await point_primary_at(secondary["ResourceRecords"])
    try:
        await eventually(lambda: answered_by("lb-eu-1"))
        assert (await world.sb.probe_service())["region"] == "eu-west-1"
    finally:
        await point_primary_at(primary["ResourceRecords"])
    await eventually(lambda: answered_by("lb-1"))


async def test_agent_actions_change_the_simulated_hosts(world: World) -> None:
    """promote makes a replica primary; deregister/register_backend change what an LB uses."""
    assert (await world.action("db-3", "promote", {}))["previous_role"] == "replica"
    assert await _db(world, "db-3", "role") == "primary"
    backend = world.host("app-1").app_addr
    result = await world.action("lb-eu-1", "register_backend", {"address": backend})
    assert backend in result["backends"]  # type: ignore[operator]
    result = await world.action("lb-eu-1", "deregister_backend", {"address": "app-eu-1"})
    assert result["backends"] == [backend]
    answer = await world.action("app-eu-1", "set_database", {"address": "db-3"})
    assert answer["database"] == "db-3"


async def test_terminate_instance_silences_it_for_good(world: World) -> None:
    """terminate-instance: moto says terminated, its ports close; heal cannot revive it."""
    await world.do("terminate-instance", "app-6")
    assert await world.state("app-6") == "terminated"
    host = world.sb.hosts[world.sb.seeded.instances["app-6"]]
    assert not host.app.running
    assert not host.agent.running
    await world.do("heal", "app-6")
    assert await world.state("app-6") == "terminated"


async def test_control_api_refuses_a_bad_fault_and_applies_a_good_one(world: World) -> None:
    """The control API names the problem for a bad verb or target, and applies good faults."""
    url = world.sb.control_url
    assert url is not None
    status, answer = await control.send(url, {"do": "explode", "target": "app-1"})
    assert status == 400
    assert "explode" in answer["error"]
    status, answer = await control.send(url, {"do": "fail-app", "target": "us-east-1a"})
    assert status == 400
    assert "zone" in answer["error"]
    status, _ = await control.send(url, {"do": "fail-app", "target": "app-2"})
    assert status == 200
    assert await world.app("app-2") == 500
    status, _ = await control.send(url, {"do": "heal", "target": "app-2"})
    assert status == 200
    assert await world.app("app-2") == 200


async def _is(value: Awaitable[object], want: object) -> bool:
    return await value == want


async def _db(world: World, name: str, key: str) -> object:
    facts = await world.facts(name)
    assert isinstance(facts, dict)
    return facts["checks"]["database"]["data"][key]


async def _integrity(world: World, name: str) -> object:
    if world.sb.host_named(name) is None:
        return None
    facts = await world.facts(name)
    if not isinstance(facts, dict) or "database" not in facts["checks"]:
        return None
    return facts["checks"]["database"]["data"]["integrity"]
