"""app_server.replace against the in-memory provider: placement, registration, crash safety."""

from __future__ import annotations

from pathlib import Path

from drwatch.act.base import Deps
from drwatch.act.testing import (
    APP_PORT,
    REGION,
    CrashAt,
    World,
    crash_at_every_point,
    new_world,
    run_plan,
)
from drwatch.model.fleet import InstanceState
from drwatch.model.plan import Plan, PlaybookName, RunOutcome


def make_world() -> tuple[World, Deps]:
    return new_world()


ZONES = {"app-3": "us-east-1b", "app-5": "us-east-1c"}


def replace_plan(world: World, *names: str, avoid: tuple[str, ...] = ()) -> Plan:
    return Plan(
        incident_id="inc-app",
        playbook=PlaybookName.APP_REPLACE,
        region=REGION,
        zone=ZONES[names[0]],
        group="app",
        targets=tuple(world.id(n) for n in names),
        avoid_zones=avoid,
    )


async def assert_app3_replaced(world: World, context: str = "", *, stops: int = 1) -> None:
    fake = world.provider
    assert fake.count("run_instance") == 1, context
    assert fake.count("stop_instance") == stops, context
    (new,) = await world.launched()
    assert new.zone == "us-east-1b", context
    assert new.tag("Name") == "app-3", context
    assert new.tag("drwatch:group") == "app", context
    assert new.tag("drwatch:agent-addr") is None, context
    assert new.tag("drwatch:app-addr") is None, context
    old = await world.instance("app-3")
    assert old.state is InstanceState.STOPPED, context
    for lb in ("lb-1", "lb-2"):
        backends = world.hosts.backends[world.id(lb)]
        assert f"{new.private_ip}:{APP_PORT}" in backends, context
        assert "app-3" not in backends, context


async def test_replaces_a_stopped_app_server_in_its_zone(tmp_path: Path) -> None:
    """app-3 stopped: one launch in us-east-1b, registered on both LBs, old one stopped."""
    world, deps = make_world()
    world.provider.set_state(world.id("app-3"), InstanceState.STOPPED)
    progress = await run_plan(tmp_path / "j.db", deps, replace_plan(world, "app-3"), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    assert [s.name for s in progress.steps] == [
        "launch_replacement",
        "wait_healthy",
        "register_backend",
        "deregister_old",
        "stop_old",
    ]
    await assert_app3_replaced(world, stops=0)
    assert progress.steps[-1].detail.endswith("was already stopped")
    assert len(progress.new_instances) == 1


async def test_launch_refused_in_its_zone_goes_to_a_healthy_one(tmp_path: Path) -> None:
    """InsufficientInstanceCapacity in the old zone: the replacement lands in another zone,
    and the step's detail says why."""
    world, deps = make_world()
    world.provider.fail_launches_in("us-east-1b")
    progress = await run_plan(tmp_path / "j.db", deps, replace_plan(world, "app-3"), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    (new,) = await world.launched()
    assert new.zone != "us-east-1b"
    assert "InsufficientInstanceCapacity" in progress.steps[0].detail


async def test_zone_outage_places_both_replacements_outside_the_zone(tmp_path: Path) -> None:
    """us-east-1c out: app-5 and app-6 are replaced in the two healthy zones, one each."""
    world, deps = make_world()
    world.provider.set_zone_state("us-east-1c", "impaired")
    world.hosts.down |= {world.id("app-5"), world.id("app-6")}
    plan = replace_plan(world, "app-5", "app-6", avoid=("us-east-1c",))
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    zones = sorted(i.zone for i in await world.launched())
    assert zones == ["us-east-1a", "us-east-1b"]
    assert world.provider.count("stop_instance") == 2


async def test_survives_a_crash_at_every_point(tmp_path: Path) -> None:
    """Killed after every step and between every side effect and its journal row, a new
    runner resumes from the journal and finishes with exactly one launch and one stop
    (app-3 is running but its app is dead, so stopping it is a real side effect)."""
    world, deps = make_world()
    world.hosts.down.add(world.id("app-3"))
    clean = CrashAt()
    await run_plan(
        tmp_path / "clean.db", deps, replace_plan(world, "app-3"), owner="w1", hook=clean
    )
    assert any(p.endswith(":applied") for p in clean.points)
    for n, point in enumerate(clean.points, start=1):
        world, deps = make_world()
        world.hosts.down.add(world.id("app-3"))
        plan = replace_plan(world, "app-3")
        journal = tmp_path / f"crash-{n}.db"
        first = await run_plan(journal, deps, plan, owner="w1", hook=CrashAt(n))
        assert first is not None
        assert first.outcome is RunOutcome.RUNNING, point
        second = await run_plan(journal, deps, plan, owner="w2", resume=True)
        assert second is not None
        assert second.outcome is RunOutcome.SUCCEEDED, (point, second.detail)
        await assert_app3_replaced(world, point)


async def test_survives_a_crash_at_every_point_with_describe_lag(tmp_path: Path) -> None:
    """Crash anywhere while describe lags behind what the provider made: the resumed run
    cannot see the replacement, asks again with the same token, and gets it back."""

    def setup() -> tuple[World, Deps, Plan]:
        world, deps = make_world()
        world.hosts.down.add(world.id("app-3"))
        world.provider.lag_describes(8)
        return world, deps, replace_plan(world, "app-3")

    async def verify(world: World, point: str) -> None:
        fake = world.provider
        made = fake.count("run_instance") - sum(1 for c in fake.replayed if c[0] == "run_instance")
        assert made == 1, point
        (new,) = await world.launched()
        assert new.zone == "us-east-1b", point
        assert (await world.instance("app-3")).state is InstanceState.STOPPED, point

    await crash_at_every_point(tmp_path, setup, verify)


async def test_paused_kill_switch_touches_nothing(tmp_path: Path) -> None:
    """The kill switch on from the start: the run waits before its first step, and
    neither the provider nor any agent is asked anything that changes them."""
    world, deps = make_world()
    world.provider.set_state(world.id("app-3"), InstanceState.STOPPED)
    progress = await run_plan(
        tmp_path / "j.db",
        deps,
        replace_plan(world, "app-3"),
        owner="w1",
        kill_switch=lambda: True,
        within=1.0,
    )
    assert progress is not None
    assert progress.outcome is RunOutcome.RUNNING
    assert progress.steps == ()
    assert world.provider.calls == []
    assert world.hosts.actions == []


async def test_launch_moved_to_another_zone_then_resumed_under_describe_lag_is_one_instance(
    tmp_path: Path,
) -> None:
    """The double launch found by hand: us-east-1b refuses, the launch lands in another
    zone, drwatch dies before journaling it done; on resume us-east-1b has capacity again
    and describe does not show the new instance yet. One token for the logical launch
    makes the retry in us-east-1b return the instance already made: one instance."""
    world, deps = make_world()
    world.hosts.down.add(world.id("app-3"))
    world.provider.fail_launches_in("us-east-1b")
    world.provider.lag_describes(20)
    plan = replace_plan(world, "app-3")
    journal = tmp_path / "j.db"
    crash = CrashAt(at=f"launch_replacement/launch:{world.id('app-3')}:applied")
    first = await run_plan(journal, deps, plan, owner="w1", hook=crash)
    assert first is not None
    assert first.outcome is RunOutcome.RUNNING
    assert len(await world.launched()) == 0  # made, but describe does not show it yet

    world.provider.heal()  # capacity is back in us-east-1b
    second = await run_plan(journal, deps, plan, owner="w2", resume=True)
    assert second is not None
    assert second.outcome is RunOutcome.SUCCEEDED, second.detail
    (new,) = await world.launched()
    assert new.zone != "us-east-1b"
    tokens = {c[3] for c in world.provider.calls if c[0] == "run_instance"}
    assert len(tokens) == 1  # every attempt, in every zone, carried the same token
    attempts = [c[2] for c in world.provider.calls if c[0] == "run_instance"]
    assert attempts[0] == "us-east-1b"
    assert "us-east-1b" in attempts[2:]  # the resumed run asked us-east-1b again
