"""The runner with small hand-written playbooks: journaling, kill switch, resume, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from drwatch.act.base import (
    JSON,
    Deps,
    Outcome,
    Playbook,
    RunContext,
    Step,
    StepError,
    done,
    skipped,
)
from drwatch.act.journal import Journal
from drwatch.act.runner import Runner
from drwatch.act.testing import CrashAt, new_world
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, StepStatus

PLAN = Plan(
    incident_id="inc-1",
    playbook=PlaybookName.APP_REPLACE,
    region="us-east-1",
    zone="us-east-1a",
    group="app",
    targets=("i-1",),
)


class Effects:
    """A toy world: side effects are appended to `applied`."""

    def __init__(self) -> None:
        self.applied: list[JSON] = []
        self.choice = "first"

    async def apply(self, params: JSON) -> JSON:
        self.applied.append(params)
        return {"n": len(self.applied)}

    async def nothing(self, _params: JSON) -> JSON | None:
        return None


def toy_playbook(world: Effects, *, fail: bool = False, boom: bool = False) -> Playbook:
    async def look(ctx: RunContext) -> Outcome:
        return done("looked", seen=1)

    async def act(ctx: RunContext) -> Outcome:
        result = await ctx.effect(
            "change", {"choice": world.choice}, check=world.nothing, apply=world.apply
        )
        return done(f"changed #{result['n']}")

    async def maybe(ctx: RunContext) -> Outcome:
        if boom:
            raise ValueError("a bug")
        if fail:
            raise StepError("cannot reach the goal")
        return skipped("not needed")

    return Playbook(
        PlaybookName.APP_REPLACE,
        (Step("look", look), Step("act", act), Step("maybe", maybe)),
    )


def make_runner(
    path: Path,
    book: Playbook,
    deps: Deps,
    owner: str = "w1",
    *,
    kill_switch: Callable[[], bool] = lambda: False,
    crash_hook: CrashAt | None = None,
) -> tuple[Runner, Journal]:
    journal = Journal(path)
    runner = Runner(
        journal, {book.name: book}, deps, owner, kill_switch, crash_hook=crash_hook or CrashAt()
    )
    return runner, journal


async def test_progress_reports_each_step_and_the_outcome(tmp_path: Path) -> None:
    """A run's progress lists its steps with status and detail, then its outcome."""
    world = Effects()
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(world), new_world()[1])
    runner.submit(PLAN)
    assert runner.active() == 1
    progress = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED
    assert [(s.name, s.status, s.detail) for s in progress.steps] == [
        ("look", StepStatus.DONE, "looked"),
        ("act", StepStatus.DONE, "changed #1"),
        ("maybe", StepStatus.SKIPPED, "not needed"),
    ]
    assert runner.active() == 0
    assert world.applied == [{"choice": "first"}]


async def test_a_failing_step_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    """StepError in a step: the step and the run are failed, with the step's words."""
    world = Effects()
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(world, fail=True), new_world()[1])
    runner.submit(PLAN)
    progress = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert progress.detail == "cannot reach the goal"
    assert progress.steps[-1].status is StepStatus.FAILED


async def test_a_bug_in_a_step_fails_the_run_not_the_runner(tmp_path: Path) -> None:
    """An unexpected exception ends that run `failed` as an internal error; the runner
    still takes the next plan."""
    world = Effects()
    book = toy_playbook(world, boom=True)
    runner, journal = make_runner(tmp_path / "j.db", book, new_world()[1])
    runner.submit(PLAN)
    progress = await runner.wait(PLAN.incident_id, 10)
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert progress.detail.startswith("internal error: ValueError")
    second = Plan("inc-2", PLAN.playbook, PLAN.region, PLAN.zone, PLAN.group, PLAN.targets)
    runner.submit(second)
    assert await runner.wait("inc-2", 10) is not None
    journal.close()


async def test_kill_switch_holds_the_run_at_the_next_step_until_lifted(tmp_path: Path) -> None:
    """The switch turns on during a step: that step finishes, the run waits before the
    next one (still running, nothing applied), and goes on once the switch is off."""
    world = Effects()
    switch = {"on": False}

    async def look(ctx: RunContext) -> Outcome:
        switch["on"] = True
        return done("looked")

    base = toy_playbook(world)
    book = Playbook(base.name, (Step("look", look), *base.steps[1:]))
    runner, journal = make_runner(
        tmp_path / "j.db", book, new_world()[1], kill_switch=lambda: switch["on"]
    )
    runner.submit(PLAN)
    held = await runner.wait(PLAN.incident_id, 1.0)
    assert held is not None
    assert held.outcome is RunOutcome.RUNNING
    assert [(s.name, s.status) for s in held.steps] == [("look", StepStatus.DONE)]
    assert world.applied == []
    switch["on"] = False
    final = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert final is not None
    assert final.outcome is RunOutcome.SUCCEEDED
    assert world.applied == [{"choice": "first"}]


async def test_kill_switch_on_before_the_first_side_effect_waits_there(tmp_path: Path) -> None:
    """The switch turns on inside a step, before the run's first side effect: the run
    waits right there (nothing changed yet) instead of failing."""
    world = Effects()
    switch = {"on": False}

    async def act(ctx: RunContext) -> Outcome:
        switch["on"] = True
        result = await ctx.effect(
            "change", {"choice": world.choice}, check=world.nothing, apply=world.apply
        )
        return done(f"changed #{result['n']}")

    base = toy_playbook(world)
    book = Playbook(base.name, (base.steps[0], Step("act", act), base.steps[2]))
    runner, journal = make_runner(
        tmp_path / "j.db", book, new_world()[1], kill_switch=lambda: switch["on"]
    )
    runner.submit(PLAN)
    held = await runner.wait(PLAN.incident_id, 1.0)
    assert held is not None
    assert held.outcome is RunOutcome.RUNNING
    assert world.applied == []
    switch["on"] = False
    final = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert final is not None
    assert final.outcome is RunOutcome.SUCCEEDED
    assert world.applied == [{"choice": "first"}]


async def test_a_run_resumed_at_start_while_paused_waits_for_resume(tmp_path: Path) -> None:
    """A crash left the run unfinished after its first step; the next start finds the kill
    switch on: the resumed run applies nothing until the switch is lifted, then once."""
    world = Effects()
    deps = new_world()[1]
    path = tmp_path / "j.db"
    runner, journal = make_runner(path, toy_playbook(world), deps, crash_hook=CrashAt(1))
    runner.submit(PLAN)
    first = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert first is not None
    assert first.outcome is RunOutcome.RUNNING
    switch = {"on": True}
    runner2, journal2 = make_runner(
        path, toy_playbook(world), deps, owner="w2", kill_switch=lambda: switch["on"]
    )
    assert await runner2.resume() == 1
    held = await runner2.wait(PLAN.incident_id, 1.0)
    assert held is not None
    assert held.outcome is RunOutcome.RUNNING
    assert world.applied == []
    switch["on"] = False
    final = await runner2.wait(PLAN.incident_id, 10)
    journal2.close()
    assert final is not None
    assert final.outcome is RunOutcome.SUCCEEDED
    assert world.applied == [{"choice": "first"}]


async def test_duplicate_plan_for_a_running_incident_is_ignored(tmp_path: Path) -> None:
    """A second submit while the first run is in flight starts nothing new."""
    world = Effects()
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(world), new_world()[1])
    runner.submit(PLAN)
    runner.submit(PLAN)
    assert runner.active() == 1
    await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert len(world.applied) == 1
    check = Journal(tmp_path / "j.db")
    assert len(check.recent()) == 1
    check.close()


async def test_unknown_playbook_fails_the_run_saying_so(tmp_path: Path) -> None:
    """A plan for a playbook that is not installed is journaled as failed, with why."""
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(Effects()), new_world()[1])
    plan = Plan("inc-9", PlaybookName.REGION_FAILOVER, "us-east-1", "", "app", ())
    runner.submit(plan)
    progress = await runner.wait("inc-9", 10)
    journal.close()
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert "no playbook named region.failover" in progress.detail


async def test_resume_applies_the_journaled_params_once(tmp_path: Path) -> None:
    """Crash after the intent: the resumed run applies the effect once, with the params
    the crashed attempt chose (not what the world would suggest now), and later rows
    name the new runner."""
    world = Effects()
    deps = new_world()[1]
    path = tmp_path / "j.db"
    runner, journal = make_runner(
        path,
        toy_playbook(world),
        deps,
        crash_hook=CrashAt(2),  # 1: look:end, 2: act/change:intent
    )
    runner.submit(PLAN)
    first = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert first is not None
    assert first.outcome is RunOutcome.RUNNING
    assert world.applied == []
    world.choice = "second"
    runner2, journal2 = make_runner(path, toy_playbook(world), deps, owner="w2")
    assert await runner2.resume() == 1
    final = await runner2.wait(PLAN.incident_id, 10)
    steps = journal2.steps(final.run_id if final else "")
    journal2.close()
    assert final is not None
    assert final.outcome is RunOutcome.SUCCEEDED
    assert world.applied == [{"choice": "first"}]
    assert [(s.name, s.owner) for s in steps] == [("look", "w1"), ("act", "w2"), ("maybe", "w2")]


async def test_aclose_leaves_the_run_for_the_next_start(tmp_path: Path) -> None:
    """Shutdown cancels runs but leaves them `running` in the journal; the next runner
    resumes and completes them."""
    world = Effects()
    gate, started = asyncio.Event(), asyncio.Event()

    async def slow(ctx: RunContext) -> Outcome:
        started.set()
        await asyncio.wait_for(gate.wait(), 10)
        return done("waited")

    base = toy_playbook(world)
    book = Playbook(base.name, (Step("look", slow), *base.steps[1:]))
    path = tmp_path / "j.db"
    runner, journal = make_runner(path, book, new_world()[1])
    runner.submit(PLAN)
    await asyncio.wait_for(started.wait(), 10)
    await runner.aclose()
    journal.close()
    check = Journal(path)
    assert len(check.unfinished()) == 1
    check.close()
    gate.set()
    runner2, journal2 = make_runner(path, book, new_world()[1], owner="w2")
    await runner2.resume()
    final = await runner2.wait(PLAN.incident_id, 10)
    journal2.close()
    assert final is not None
    assert final.outcome is RunOutcome.SUCCEEDED
    assert len(world.applied) == 1


async def test_build_runner_journals_under_the_state_dir_as_the_watcher(tmp_path: Path) -> None:
    """The runner the daemon builds keeps its journal in watcher.state_dir, installs every
    contract playbook, and names its rows after watcher.name."""
    from drwatch.act.testing import SimulatedHosts
    from drwatch.act.wiring import build_runner
    from drwatch.config import parse
    from drwatch.providers.fake import FakeProvider

    cfg = parse(
        {
            "watcher": {"name": "dr-east", "state_dir": str(tmp_path / "state")},
            "provider": {"regions": ["us-east-1"]},
            "agent": {"secret_file": str(tmp_path / "secret")},
            "groups": [
                {
                    "name": "app",
                    "role": "app_server",
                    "select": {"tags": {"drwatch:group": "app"}},
                    "checks": [{"port": 8080, "path": "/healthz"}],
                }
            ],
        }
    )
    provider = FakeProvider(["us-east-1"])
    hosts = SimulatedHosts(provider)
    runner = build_runner(cfg, provider, hosts, hosts, kill_switch=lambda: True)
    plan = Plan("inc-w", PlaybookName.APP_REPLACE, "us-east-1", "us-east-1a", "app", ("i-x",))
    runner.submit(plan)
    progress = await runner.wait("inc-w", 10)
    await runner.aclose()
    runner.journal.close()
    assert (tmp_path / "state" / Journal.FILE_NAME).exists()
    assert progress is not None
    journal = Journal.in_state_dir(tmp_path / "state")
    (row,) = journal.recent()
    journal.close()
    assert row.owner == "dr-east"


async def test_next_plan_of_an_incident_starts_once_the_first_is_over(tmp_path: Path) -> None:
    """A zone incident runs one plan per role, one after another, under one incident id:
    once the first run's outcome is published, the next submit starts a new run."""
    world = Effects()
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(world), new_world()[1])
    runner.submit(PLAN)
    first = await runner.wait(PLAN.incident_id, 10)
    runner.submit(PLAN)
    second = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    assert first is not None
    assert second is not None
    assert first.run_id != second.run_id
    assert second.outcome is RunOutcome.SUCCEEDED
    assert len(world.applied) == 2


async def test_progress_of_finished_runs_survives_a_restart(tmp_path: Path) -> None:
    """After a restart, the API can still show a finished run's steps: resume() reads them
    back from the journal, and resumes nothing that had ended."""
    world = Effects()
    path = tmp_path / "j.db"
    runner, journal = make_runner(path, toy_playbook(world), new_world()[1])
    runner.submit(PLAN)
    before = await runner.wait(PLAN.incident_id, 10)
    journal.close()
    runner2, journal2 = make_runner(path, toy_playbook(world), new_world()[1], owner="w2")
    assert await runner2.resume() == 0
    after = runner2.progress(PLAN.incident_id)
    journal2.close()
    assert before is not None
    assert after == before


async def test_resume_starts_remembering_database_roles(tmp_path: Path) -> None:
    """From resume() on, the runner keeps the role each database's agent reports, so it
    still knows it after the host goes silent."""
    world, deps = new_world()
    await world.hosts.refresh()
    runner, journal = make_runner(tmp_path / "j.db", toy_playbook(Effects()), deps)
    await runner.resume()
    await asyncio.sleep(0)  # let the watcher take its first look
    await runner.aclose()
    journal.close()
    assert deps.roles.role(world.id("db-2")) == "replica"
    assert deps.roles.role(world.id("db-1")) == "primary"
