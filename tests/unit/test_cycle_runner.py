"""The cycle with the real playbook runner over an in-memory provider: the seam holds."""

from __future__ import annotations

from pathlib import Path

from drwatch.act.journal import Journal
from drwatch.act.playbooks import all_playbooks
from drwatch.act.runner import Runner
from drwatch.act.testing import REGION, new_world
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle
from drwatch.incidents import IncidentStore
from drwatch.model import InstanceState, RunOutcome
from drwatch.model.incident import IncidentOutcome


async def test_stopped_app_server_is_replaced_and_recovered(tmp_path: Path) -> None:
    """app-3 stopped: the cycle submits app_server.replace to the real runner, follows
    its steps, and ends the incident recovered once the replacement is healthy."""
    world, deps = new_world()
    journal = Journal(tmp_path / "journal.sqlite3")
    runner = Runner(journal, all_playbooks(), deps, "test", lambda: False)
    now = world.hosts.now
    cycle = Cycle(PolicyConfig(), TimingConfig(), IncidentStore(tmp_path), runner, now - 3600)
    try:
        await world.provider.stop_instance(REGION, world.id("app-3"))
        report = cycle.tick(await world.hosts.refresh(), now)
        assert report.summary == "started app_server.replace for app-3"
        (inc,) = report.open_incidents
        progress = await runner.wait(inc.id, 20.0)
        assert progress is not None
        assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
        cycle.tick(await world.hosts.refresh(), now + 1)
        report = cycle.tick(await world.hosts.refresh(), now + 2)
        done = cycle.store.get(inc.id)
        assert done is not None
        assert done.outcome is IncidentOutcome.RECOVERED
        assert [s.name for s in done.steps] == [s.name for s in progress.steps]
        launched = await world.launched()
        assert len(launched) == 1
        assert (await world.instance("app-3")).state is InstanceState.STOPPED
        assert report.summary.startswith("no action: 10/10 healthy")
    finally:
        await runner.aclose()
        journal.close()


def _cycle(tmp_path: Path, runner: Runner, started: float, **policy: object) -> Cycle:
    return Cycle(
        PolicyConfig.model_validate(policy),
        TimingConfig(),
        IncidentStore(tmp_path),
        runner,
        started,
    )


async def test_dry_run_never_touches_the_provider(tmp_path: Path) -> None:
    """Dry-run with the real playbooks: the incident is decided and recorded, and not one
    call reaches the provider after the fault (the kill switch says dry-run, as the
    daemon wires it)."""
    world, deps = new_world()
    journal = Journal(tmp_path / "journal.sqlite3")
    runner = Runner(journal, all_playbooks(), deps, "test", lambda: True)
    now = world.hosts.now
    cycle = _cycle(tmp_path, runner, now - 3600, dry_run=True)
    try:
        await world.provider.stop_instance(REGION, world.id("app-3"))
        calls_after_fault = list(world.provider.calls)
        for k in range(3):
            report = cycle.tick(await world.hosts.refresh(), now + k)
        assert report.dry_run
        (inc,) = report.open_incidents
        assert any("dry-run" in r for r in inc.gate_reasons), inc.gate_reasons
        assert runner.active() == 0
        assert runner.progress(inc.id) is None
        assert world.provider.calls == calls_after_fault
        assert await world.launched() == []
    finally:
        await runner.aclose()
        journal.close()


async def test_cooldown_stops_a_second_replacement_of_the_same_target(tmp_path: Path) -> None:
    """app-3 replaced once; its replacement (app-3 again) dies within the cooldown: the
    second incident is blocked with the cooldown's reason, and no second launch happens."""
    world, deps = new_world()
    journal = Journal(tmp_path / "journal.sqlite3")
    runner = Runner(journal, all_playbooks(), deps, "test", lambda: False)
    now = world.hosts.now
    cycle = _cycle(tmp_path, runner, now - 3600, cooldown="10m")
    try:
        await world.provider.stop_instance(REGION, world.id("app-3"))
        (inc,) = cycle.tick(await world.hosts.refresh(), now).open_incidents
        progress = await runner.wait(inc.id, 20.0)
        assert progress is not None
        assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
        for k in (1, 2):
            cycle.tick(await world.hosts.refresh(), now + k)
        (replacement,) = await world.launched()
        await world.provider.stop_instance(REGION, replacement.id)
        report = cycle.tick(await world.hosts.refresh(), now + 3)
        (second,) = report.open_incidents
        assert second.id != inc.id
        assert second.outcome is IncidentOutcome.BLOCKED
        assert second.gate_reasons[0].startswith("cooldown"), second.gate_reasons
        assert world.provider.count("run_instance") == 1
    finally:
        await runner.aclose()
        journal.close()


async def test_blast_radius_stops_a_mass_replacement_with_real_playbooks(
    tmp_path: Path,
) -> None:
    """Four of six app servers stopped at once, blast radius one half: three are replaced,
    the fourth incident is blocked and says why; exactly three launches reach the provider."""
    world, deps = new_world()
    journal = Journal(tmp_path / "journal.sqlite3")
    runner = Runner(journal, all_playbooks(), deps, "test", lambda: False)
    now = world.hosts.now
    cycle = _cycle(tmp_path, runner, now - 3600, max_concurrent=10, blast_radius=0.5)
    try:
        for name in ("app-1", "app-3", "app-4", "app-5"):
            await world.provider.stop_instance(REGION, world.id(name))
        report = cycle.tick(await world.hosts.refresh(), now)
        blocked = [i for i in report.open_incidents if i.outcome is IncidentOutcome.BLOCKED]
        (held,) = blocked
        assert held.gate_reasons[0].startswith("blast radius"), held.gate_reasons
        acting = [i for i in report.open_incidents if i is not held]
        for inc in acting:
            progress = await runner.wait(inc.id, 20.0)
            assert progress is not None
            assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
        assert world.provider.count("run_instance") == 3
    finally:
        await runner.aclose()
        journal.close()
