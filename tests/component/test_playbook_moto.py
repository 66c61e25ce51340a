"""Playbooks through the real AWS adapter against moto_server (the sandbox's seeded world):
crash between the cloud call and its journal row, resume, and count what exists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drwatch.act.base import RUN_TAG, Deps, GroupInfo
from drwatch.act.testing import FAST_SETTINGS, TEST_GROUPS, CrashAt, SimulatedHosts, run_plan
from drwatch.config import ProviderConfig
from drwatch.model.fleet import InstanceState, Role
from drwatch.model.plan import Plan, PlaybookName, RunOutcome
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import CloudInstance
from drwatch.sandbox.cloud import Moto, Seeded, seed, user_data_text
from drwatch.sandbox.topology import default_topology
from tests.conftest import MotoServer

pytestmark = pytest.mark.services

US = "us-east-1"
EU = "eu-west-1"


@dataclass
class Cloud:
    moto: Moto
    seeded: Seeded
    provider: AwsProvider
    hosts: SimulatedHosts
    deps: Deps

    def id(self, name: str) -> str:
        return self.seeded.instances[name]

    async def made_by_runs(self) -> list[CloudInstance]:
        return [i for i in await self.provider.instances(US) if i.tag(RUN_TAG)]


@pytest.fixture
async def cloud(moto: MotoServer) -> AsyncIterator[Cloud]:
    boto = Moto(moto.url)
    seeded = await asyncio.to_thread(seed, boto, default_topology())
    cfg = ProviderConfig(regions=[US], endpoints={US: moto.url})
    async with AwsProvider(cfg, connect_timeout=2.0, read_timeout=10.0) as provider:
        hosts = SimulatedHosts(provider, regions=(US,), groups=TEST_GROUPS)
        hosts.roles[seeded.instances["db-2"]] = "replica"
        deps = Deps(provider, hosts, hosts, TEST_GROUPS, FAST_SETTINGS)
        yield Cloud(boto, seeded, provider, hosts, deps)


async def test_app_replace_crash_after_launch_makes_one_instance(
    cloud: Cloud, tmp_path: Path
) -> None:
    """Killed right after RunInstances returned (before the journal's "done"), a new
    runner finds the instance by its run tag: one replacement, in app-3's zone, with
    DRWATCH_DB in its UserData and without the old host's address tags."""
    await cloud.provider.stop_instance(US, cloud.id("app-3"))
    plan = Plan("inc-m1", PlaybookName.APP_REPLACE, US, "us-east-1b", "app", (cloud.id("app-3"),))
    journal = tmp_path / "j.db"
    crash = CrashAt(at=f"/launch:{cloud.id('app-3')}:applied")  # the launch, not its attempt
    first = await run_plan(journal, cloud.deps, plan, owner="w1", hook=crash)
    assert first is not None
    assert first.outcome is RunOutcome.RUNNING
    assert crash.points[-1].startswith("launch_replacement/launch:")
    assert len(await cloud.made_by_runs()) == 1
    second = await run_plan(journal, cloud.deps, plan, owner="w2", resume=True)
    assert second is not None
    assert second.outcome is RunOutcome.SUCCEEDED, second.detail
    (new,) = await cloud.made_by_runs()
    assert new.zone == "us-east-1b"
    assert new.tag("Name") == "app-3"
    assert new.tag("drwatch:app-addr") is None
    text = await asyncio.to_thread(user_data_text, cloud.moto.ec2(US), new.id)
    assert "DRWATCH_DB=db-1" in text


async def test_db_relaunch_crash_after_attach_moves_the_volume_once(
    cloud: Cloud, tmp_path: Path
) -> None:
    """db-1 stopped; killed right after AttachVolume: on resume, db-1-data is attached to
    the one new host, and the old primary stays stopped."""
    await cloud.provider.stop_instance(US, cloud.id("db-1"))
    plan = Plan("inc-m2", PlaybookName.DB_RECOVER, US, "us-east-1a", "db", (cloud.id("db-1"),))
    journal = tmp_path / "j.db"
    first = await run_plan(
        journal, cloud.deps, plan, owner="w1", hook=CrashAt(at="/attach:applied")
    )
    assert first is not None
    assert first.outcome is RunOutcome.RUNNING
    second = await run_plan(journal, cloud.deps, plan, owner="w2", resume=True)
    assert second is not None
    assert second.outcome is RunOutcome.SUCCEEDED, second.detail
    (new,) = await cloud.made_by_runs()
    assert new.zone == "us-east-1a"
    volumes = {v.id: v for v in await cloud.provider.volumes(US)}
    assert volumes[cloud.seeded.volumes["db-1-data"]].attached_to == new.id
    (old,) = [i for i in await cloud.provider.instances(US) if i.id == cloud.id("db-1")]
    assert old.state is InstanceState.STOPPED


async def test_lb_replace_in_the_standby_region_without_an_eip(
    moto: MotoServer, tmp_path: Path
) -> None:
    """lb-eu-1 (group lb-eu: no Elastic IP, reached through the public name's SECONDARY
    record) stopped: load_balancer.replace launches a new LB in eu-west-1 and stops the
    old one; move_eip is skipped, saying the group has no Elastic IP, and nothing is
    associated."""
    boto = Moto(moto.url)
    seeded = await asyncio.to_thread(seed, boto, default_topology())
    groups = dict(TEST_GROUPS, **{"lb-eu": GroupInfo("lb-eu", Role.LOAD_BALANCER, size=1)})
    cfg = ProviderConfig(regions=[US, EU], endpoints={US: moto.url, EU: moto.url})
    async with AwsProvider(cfg, connect_timeout=2.0, read_timeout=10.0) as provider:
        hosts = SimulatedHosts(provider, regions=(US, EU), groups=groups)
        deps = Deps(provider, hosts, hosts, groups, FAST_SETTINGS)
        old = seeded.instances["lb-eu-1"]
        await provider.stop_instance(EU, old)
        plan = Plan("inc-m3", PlaybookName.LB_REPLACE, EU, "eu-west-1a", "lb-eu", (old,))
        progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
        assert progress is not None
        assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
        steps = {s.name: s for s in progress.steps}
        assert steps["move_eip"].status == "skipped"
        assert "lb-eu has no Elastic IP" in steps["move_eip"].detail
        (new,) = [i for i in await provider.instances(EU) if i.tag(RUN_TAG)]
        assert new.zone.startswith(EU)
        assert new.tag("drwatch:group") == "lb-eu"
        assert new.state is InstanceState.RUNNING
        (was,) = [i for i in await provider.instances(EU) if i.id == old]
        assert was.state is InstanceState.STOPPED
        assert all(a.instance_id != new.id for a in await provider.addresses(EU))
