"""The tick around region.failover: one run per approval, recovered while the region stays
lost, and an approval for an incident that has ended refused with its state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drwatch.cycle import NotAwaitingApprovalError
from drwatch.model import Fleet, RunOutcome, StepRecord, StepStatus
from drwatch.model.incident import IncidentOutcome
from drwatch.model.plan import PlaybookName
from tests.scenarios.world import NOW, World
from tests.unit.test_cycle import FakeRunner, _region_down, make


def test_a_succeeded_failover_is_not_run_again_while_the_region_stays_lost(
    tmp_path: Path,
) -> None:
    """The run retires the lost region's instances: the incident ends recovered and no
    second region.failover starts (it would flip the service back and forth)."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    lost = _region_down(World.healthy()).snapshot()
    (inc,) = cycle.tick(lost, NOW).open_incidents
    cycle.approve(inc.id, NOW + 1, by="test")
    cycle.tick(lost, NOW + 1)
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    for t in range(2, 6):
        report = cycle.tick(lost, NOW + t)
    assert [p.playbook for p in runner.submitted] == [PlaybookName.REGION_FAILOVER]
    assert report.open_incidents == ()
    after = cycle.store.get(inc.id)
    assert after is not None
    assert after.outcome is IncidentOutcome.RECOVERED


def test_after_a_restart_without_the_lost_regions_instances_the_failover_ends_recovered(
    tmp_path: Path,
) -> None:
    """drwatch restarted mid-failover while the lost region's API is down: discovery no
    longer lists that region's instances. Once the run succeeds, its targets are all
    replaced, so the incident ends recovered instead of waiting for them forever."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    lost = _region_down(World.healthy()).snapshot()
    (inc,) = cycle.tick(lost, NOW).open_incidents
    cycle.approve(inc.id, NOW + 1, by="test")
    cycle.tick(lost, NOW + 1)
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    left = Fleet(tuple(i for i in lost.fleet if i.region != "us-east-1"), lost.fleet.discovered_at)
    restarted = replace(lost, fleet=left)
    for t in range(2, 5):
        cycle.tick(restarted, NOW + t)
    after = cycle.store.get(inc.id)
    assert after is not None
    assert after.outcome is IncidentOutcome.RECOVERED
    assert not after.is_open


def test_an_approval_for_an_ended_incident_is_refused_with_its_state(tmp_path: Path) -> None:
    """The region came back before anyone approved: the incident ended; approving it now
    is refused and says how it ended; nothing runs."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    (inc,) = cycle.tick(_region_down(World.healthy()).snapshot(), NOW).open_incidents
    report = cycle.tick(World.healthy().snapshot(), NOW + 1)
    assert report.open_incidents == ()
    with pytest.raises(NotAwaitingApprovalError, match=f"incident {inc.id} is not awaiting"):
        cycle.approve(inc.id, NOW + 2)
    cycle.tick(World.healthy().snapshot(), NOW + 3)
    assert runner.submitted == []


def test_a_region_runs_steps_name_what_each_touched_not_every_target(tmp_path: Path) -> None:
    """A region's one run acts on the region as a whole: its steps keep the playbook's own
    words (the replica promoted, the servers launched), not the lost region's every
    target in front of each; a zone's steps still say which targets their run is for."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    lost = _region_down(World.healthy()).snapshot()
    (inc,) = cycle.tick(lost, NOW).open_incidents
    assert len(inc.target_names) > 1
    cycle.approve(inc.id, NOW + 1, by="test")
    cycle.tick(lost, NOW + 1)
    words = ("db-3 (i-db-3) promoted in eu-west-1", "app-eu: launched app-eu-fo-2")
    steps = tuple(
        StepRecord(name, StepStatus.DONE, NOW + 1, NOW + 2, detail)
        for name, detail in zip(("promote_replica", "scale_app_servers"), words, strict=True)
    )
    runner.runs[inc.id] = replace(runner.runs[inc.id], steps=steps)
    (now,) = cycle.tick(lost, NOW + 2).open_incidents
    assert tuple(s.detail for s in now.steps) == words
