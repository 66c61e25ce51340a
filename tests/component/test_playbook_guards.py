"""What moto accepts and AWS refuses, drwatch refuses itself: attaching a volume that is
in use, or that lives in another zone. And every wait has a deadline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from drwatch.act.base import Deps, Outcome, Playbook, RunContext, Step, done
from drwatch.act.journal import Journal
from drwatch.act.playbooks.common import attach, wait_running
from drwatch.act.runner import Runner
from drwatch.act.testing import REGION, World, new_world
from drwatch.model.fleet import InstanceState
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress

PLAN = Plan("inc-g", PlaybookName.DB_RECOVER, REGION, "us-east-1a", "db", ())


async def run_step(tmp_path: Path, deps: Deps, step: Step) -> RunProgress:
    journal = Journal(tmp_path / "j.db")
    runner = Runner(journal, {PLAN.playbook: Playbook(PLAN.playbook, (step,))}, deps, "w", bool)
    runner.submit(PLAN)
    progress = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert progress is not None
    return progress


def attach_step(world: World, instance: str) -> Step:
    async def go(ctx: RunContext) -> Outcome:
        await attach(ctx, "attach", world.data_volume, world.id(instance))
        return done("attached")

    return Step("attach", go)


async def test_refuses_to_attach_a_volume_in_use(tmp_path: Path) -> None:
    """db-1-data is attached to db-1: attaching it to app-1 (same zone) is refused before
    the provider is asked."""
    world, deps = new_world()
    progress = await run_step(tmp_path, deps, attach_step(world, "app-1"))
    assert progress.outcome is RunOutcome.FAILED
    assert "in-use" in progress.detail
    assert world.provider.count("attach_volume") == 0


async def test_refuses_to_attach_a_volume_from_another_zone(tmp_path: Path) -> None:
    """db-1-data (us-east-1a), detached, is not attached to app-3 in us-east-1b."""
    world, deps = new_world()
    await world.provider.detach_volume(REGION, world.data_volume, world.id("db-1"))
    progress = await run_step(tmp_path, deps, attach_step(world, "app-3"))
    assert progress.outcome is RunOutcome.FAILED
    assert "us-east-1a" in progress.detail
    assert "us-east-1b" in progress.detail
    assert world.provider.count("attach_volume") == 0


async def test_a_wait_that_never_ends_fails_at_its_deadline(tmp_path: Path) -> None:
    """Waiting for an instance that stays stopped ends the run failed, naming the wait."""
    world, deps = new_world()
    deps = replace(deps, settings=replace(deps.settings, launch_timeout=0.2))
    world.provider.set_state(world.id("app-1"), InstanceState.STOPPED)

    async def go(ctx: RunContext) -> Outcome:
        await wait_running(ctx, world.id("app-1"))
        return done("running")

    progress = await run_step(tmp_path, deps, Step("wait", go))
    assert progress.outcome is RunOutcome.FAILED
    assert progress.detail.startswith("timed out after 0.2s waiting for")
