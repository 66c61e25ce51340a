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
