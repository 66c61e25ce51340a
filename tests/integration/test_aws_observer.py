"""Discovery and the provider observer on AwsProvider against real moto_server processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drwatch.config import GroupConfig, ProviderConfig, Selector
from drwatch.model.fleet import Fleet, InstanceState, Role
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.discovery import discover
from drwatch.observe.provider import ProviderObserver
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import LaunchSpec
from tests.conftest import MotoServer
from tests.support.services import free_port, need_binary, process, wait_http

pytestmark = pytest.mark.services

US, EU = "us-east-1", "eu-west-1"
GROUPS = [
    GroupConfig(name="app", role=Role.APP_SERVER, select=Selector(tags={"drwatch:group": "app"})),
    GroupConfig(name="db", role=Role.DATABASE, select=Selector(tags={"drwatch:group": "db"})),
]


def spec(region: str, zone: str, name: str, group: str) -> LaunchSpec:
    return LaunchSpec(
        region=region,
        zone=zone,
        image_id="ami-12345678",
        client_token=f"seed-{name}",
        tags=(("Name", name), ("drwatch:group", group)),
    )


def by_target(obs: list[Observation], layer: Layer) -> dict[str, Observation]:
    return {o.target: o for o in obs if o.layer is layer}


def config(url: str) -> ProviderConfig:
    return ProviderConfig(regions=[US, EU], endpoints={US: url, EU: url})


@pytest.fixture
async def aws(moto: MotoServer) -> AsyncIterator[AwsProvider]:
    async with AwsProvider(config(moto.url), connect_timeout=2.0, read_timeout=10.0) as p:
        yield p


async def test_discovery_by_tags_across_two_regions(moto: MotoServer, aws: AwsProvider) -> None:
    """Tagged instances in us-east-1 and eu-west-1 form one fleet; untagged ones are ignored."""
    await aws.run_instance(spec(US, "us-east-1a", "app-1", "app"))
    await aws.run_instance(spec(US, "us-east-1b", "db-1", "db"))
    await aws.run_instance(spec(EU, "eu-west-1a", "app-eu-1", "app"))
    await aws.run_instance(spec(EU, "eu-west-1a", "stray", "nobody"))
    result = await discover(aws, config(moto.url), GROUPS, now=5.0)
    assert result.ok
    assert [(i.name, i.region, i.zone, i.role) for i in result.fleet] == [
        ("app-eu-1", EU, "eu-west-1a", Role.APP_SERVER),
        ("app-1", US, "us-east-1a", Role.APP_SERVER),
        ("db-1", US, "us-east-1b", Role.DATABASE),
    ]
    (db,) = result.fleet.by_name("db-1")
    assert len(db.volumes) == 1
    assert db.private_ip is not None


async def test_observations_for_running_stopped_terminated(
    moto: MotoServer, aws: AwsProvider
) -> None:
    """Running is up; stopped and terminated are down with the state as the reason; the
    terminated instance stays in the fleet while moto still lists it."""
    ids = {
        name: await aws.run_instance(spec(US, "us-east-1a", name, "app"))
        for name in ("app-1", "app-2", "app-3")
    }
    await aws.stop_instance(US, ids["app-2"])
    await aws.terminate_instance(US, ids["app-3"])
    fleet = (await discover(aws, config(moto.url), GROUPS, now=1.0)).fleet
    assert {i.name: i.state for i in fleet} == {
        "app-1": InstanceState.RUNNING,
        "app-2": InstanceState.STOPPED,
        "app-3": InstanceState.TERMINATED,
    }
    obs = await ProviderObserver(aws, [US, EU], timeout=10.0).poll(US, fleet, now=2.0)
    assert by_target(obs, Layer.API)[US].health is Health.UP
    got = by_target(obs, Layer.PROVIDER)
    assert [(got[ids[n]].health, got[ids[n]].reason) for n in ("app-1", "app-2", "app-3")] == [
        (Health.UP, ""),
        (Health.DOWN, "stopped"),
        (Health.DOWN, "terminated"),
    ]
    assert got[ids["app-1"]].detail["system_status"] == "ok"
    assert by_target(obs, Layer.ZONE)["us-east-1a"].health is Health.UP


async def _poll_until(
    observer: ProviderObserver, fleet: Fleet, want: Health, deadline_s: float = 20.0
) -> list[Observation]:
    """Poll us-east-1 until its API observation reads `want` (moto takes a moment to start)."""
    async with asyncio.timeout(deadline_s):
        while True:
            obs = await observer.poll(US, fleet, now=asyncio.get_running_loop().time())
            if by_target(obs, Layer.API)[US].health is want:
                return obs
            await asyncio.sleep(0.1)


async def test_killed_moto_reads_unreachable_then_recovers() -> None:
    """moto killed mid-run: the API is down 'region API unreachable' and instances unknown;
    after moto comes back on the same port, the API is up again."""
    binary = need_binary("moto_server", str(Path(sys.executable).parent))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary, "-H", "127.0.0.1", "-p", str(port)]
    env = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    # Generous timeouts: a fresh moto's first EC2 call takes about a second idle and several
    # on a loaded machine (a CI run timed out connecting after 1 s); the killed moto
    # refuses connections at once, so "down" does not wait on them.
    async with AwsProvider(config(url), connect_timeout=10.0, read_timeout=30.0) as aws:
        observer = ProviderObserver(aws, [US, EU], timeout=8.0)
        with process(argv, env=env) as first:
            await asyncio.to_thread(wait_http, f"{url}/moto-api/", proc=first)
            iid = await aws.run_instance(spec(US, "us-east-1a", "app-1", "app"))
            fleet = (await discover(aws, config(url), GROUPS, now=1.0)).fleet
            up = await observer.poll(US, fleet, now=2.0)
            assert by_target(up, Layer.PROVIDER)[iid].health is Health.UP
            first.kill()
            await asyncio.to_thread(first.wait, 10)
            down = await observer.poll(US, fleet, now=3.0)
        api = by_target(down, Layer.API)[US]
        assert (api.health, api.reason, api.ok_at) == (Health.DOWN, "region API unreachable", 2.0)
        inst = by_target(down, Layer.PROVIDER)[iid]
        assert inst.health is Health.UNKNOWN
        assert inst.reason.startswith("region API unreachable: ")
        assert inst.ok_at == 2.0
        stale = await discover(aws, config(url), GROUPS, now=4.0, previous=fleet)
        assert stale.fleet.get(iid) is not None
        assert US in stale.errors
        with process(argv, env=env) as second:
            await asyncio.to_thread(wait_http, f"{url}/moto-api/", proc=second)
            back = await _poll_until(observer, fleet, Health.UP)
    # The restarted moto starts empty: the old instance is gone, and the observer says so.
    assert by_target(back, Layer.PROVIDER)[iid].reason == "not found at provider"
