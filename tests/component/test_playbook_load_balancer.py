"""Load-balancer playbooks against the in-memory provider: EIP failover, replacement, crashes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from drwatch.act.base import Deps, GroupInfo
from drwatch.act.testing import REGION, World, crash_at_every_point, new_world, run_plan
from drwatch.model.fleet import InstanceState, Role
from drwatch.model.plan import Plan, PlaybookName, RunOutcome


def lb_plan(world: World, playbook: PlaybookName) -> Plan:
    return Plan(
        incident_id="inc-lb",
        playbook=playbook,
        region=REGION,
        zone="us-east-1a",
        group="web-lb",
        targets=(world.id("lb-1"),),
    )


async def eip_holder(world: World) -> str | None:
    (addr,) = await world.provider.addresses(REGION)
    return addr.instance_id


def lb1_dead_but_running() -> tuple[World, Deps, Plan]:
    """lb-1 runs at the provider but answers nothing: stopping it is a real side effect."""
    world, deps = new_world()
    world.hosts.down.add(world.id("lb-1"))
    return world, deps, lb_plan(world, PlaybookName.LB_FAILOVER_EIP)


async def test_failover_moves_the_eip_to_the_standby_and_builds_a_new_one(tmp_path: Path) -> None:
    """lb-1 stopped: web-eip moves to lb-2, a new standby is built outside lb-2's zone."""
    world, deps = new_world()
    world.provider.set_state(world.id("lb-1"), InstanceState.STOPPED)
    plan = lb_plan(world, PlaybookName.LB_FAILOVER_EIP)
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    assert await eip_holder(world) == world.id("lb-2")
    (standby,) = await world.launched()
    assert standby.zone != "us-east-1b"
    assert standby.tag("drwatch:group") == "web-lb"
    assert world.provider.count("associate_address") == 1
    assert [s.name for s in progress.steps] == [
        "check_standby",
        "move_eip",
        "verify_service",
        "build_standby",
        "stop_old",
    ]


async def test_failover_without_a_healthy_standby_touches_nothing(tmp_path: Path) -> None:
    """lb-2 is down too: the run fails at check_standby and the EIP stays where it was."""
    world, deps = new_world()
    world.hosts.down |= {world.id("lb-1"), world.id("lb-2")}
    plan = lb_plan(world, PlaybookName.LB_FAILOVER_EIP)
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert "no healthy standby" in progress.detail
    assert world.provider.calls == []
    assert await eip_holder(world) == world.id("lb-1")


async def test_failover_survives_a_crash_at_every_point(tmp_path: Path) -> None:
    """Crash anywhere, resume: exactly one EIP move, one launch, one stop of lb-1."""

    async def verify(world: World, point: str) -> None:
        fake = world.provider
        assert fake.count("associate_address") == 1, point
        assert fake.count("run_instance") == 1, point
        assert fake.count("stop_instance") == 1, point
        assert await eip_holder(world) == world.id("lb-2"), point
        assert len(await world.launched()) == 1, point

    points = await crash_at_every_point(tmp_path, lb1_dead_but_running, verify)
    assert "move_eip/associate:applied" in points


def lb_replace_setup() -> tuple[World, Deps, Plan]:
    world, deps = new_world()
    world.hosts.down |= {world.id("lb-1"), world.id("lb-2")}
    return world, deps, lb_plan(world, PlaybookName.LB_REPLACE)


async def test_replace_launches_a_new_lb_and_moves_the_eip(tmp_path: Path) -> None:
    """No healthy standby: a new LB is launched, web-eip moves to it, lb-1 is stopped."""
    world, deps, plan = lb_replace_setup()
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    (new,) = await world.launched()
    assert await eip_holder(world) == new.id
    assert (await world.instance("lb-1")).state is InstanceState.STOPPED


async def test_replace_survives_a_crash_at_every_point(tmp_path: Path) -> None:
    """Crash anywhere in load_balancer.replace, resume: one launch, one move, one stop."""

    async def verify(world: World, point: str) -> None:
        fake = world.provider
        assert fake.count("run_instance") == 1, point
        assert fake.count("associate_address") == 1, point
        assert fake.count("stop_instance") == 1, point
        (new,) = await world.launched()
        assert await eip_holder(world) == new.id, point

    await crash_at_every_point(tmp_path, lb_replace_setup, verify)


def lb_replace_lagging() -> tuple[World, Deps, Plan]:
    world, deps, plan = lb_replace_setup()
    world.provider.lag_describes(8)
    return world, deps, plan


async def test_replace_survives_a_crash_at_every_point_with_describe_lag(tmp_path: Path) -> None:
    """As above, with the new LB missing from describe for a while after its launch: the
    resumed launch is answered from its client token, never made twice."""

    async def verify(world: World, point: str) -> None:
        fake = world.provider
        made = fake.count("run_instance") - sum(1 for c in fake.replayed if c[0] == "run_instance")
        assert made == 1, point
        (new,) = await world.launched()
        assert await eip_holder(world) == new.id, point

    await crash_at_every_point(tmp_path, lb_replace_lagging, verify)


def without_eip(world: World, deps: Deps) -> Deps:
    """The same world, but web-lb configured with no Elastic IP and no service_url."""
    groups = dict(deps.groups, **{"web-lb": GroupInfo("web-lb", Role.LOAD_BALANCER, size=2)})
    return dataclasses.replace(deps, groups=groups)


async def test_replace_in_a_group_without_an_eip_skips_the_move_and_recovers(
    tmp_path: Path,
) -> None:
    """A group with no Elastic IP (reached through DNS): the replacement is launched and
    lb-1 stopped; move_eip and verify_service are skipped, each saying why."""
    world, deps, plan = lb_replace_setup()
    progress = await run_plan(tmp_path / "j.db", without_eip(world, deps), plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    (new,) = await world.launched()
    assert new.tag("drwatch:group") == "web-lb"
    assert (await world.instance("lb-1")).state is InstanceState.STOPPED
    steps = {s.name: s for s in progress.steps}
    assert steps["move_eip"].status == "skipped"
    assert "has no Elastic IP" in steps["move_eip"].detail
    assert steps["verify_service"].status == "skipped"
    assert "no service_url" in steps["verify_service"].detail
    assert world.provider.count("associate_address") == 0


async def test_failover_in_a_group_without_an_eip_builds_a_standby_and_moves_nothing(
    tmp_path: Path,
) -> None:
    """lb-2 answers, the group has no Elastic IP: nothing to move, a new standby is built
    and lb-1 is stopped."""
    world, deps, plan = lb1_dead_but_running()
    progress = await run_plan(tmp_path / "j.db", without_eip(world, deps), plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    assert len(await world.launched()) == 1
    assert world.provider.count("associate_address") == 0
    assert (await world.instance("lb-1")).state is InstanceState.STOPPED
