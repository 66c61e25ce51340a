"""The tick: incidents open, decide, act through the runner seam, and end; the summary."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import pytest

from drwatch.alerts.model import rto_alert
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import (
    Cycle,
    IncidentNotFoundError,
    NotAwaitingApprovalError,
    NullRunner,
    Runner,
    SummaryLog,
    TickReport,
    WatcherState,
)
from drwatch.decide.rto import RtoPolicy
from drwatch.errors import DrwatchError
from drwatch.incidents import IncidentStore
from drwatch.model import (
    Fleet,
    Health,
    Layer,
    Plan,
    RunOutcome,
    RunProgress,
    Snapshot,
    StepRecord,
    StepStatus,
)
from drwatch.model.incident import IncidentOutcome, IncidentState
from drwatch.model.snapshot import Discovery
from tests.scenarios.world import NOW, US_EAST_1A, World, iid


@dataclass
class FakeRunner:
    """Records plans; the test sets each incident's progress."""

    submitted: list[Plan] = field(default_factory=list)
    runs: dict[str, RunProgress] = field(default_factory=dict)
    acts: bool = True

    def submit(self, plan: Plan) -> None:
        self.submitted.append(plan)
        n = len(self.submitted)
        self.runs[plan.incident_id] = RunProgress(
            run_id=f"run-{n}",
            incident_id=plan.incident_id,
            playbook=plan.playbook,
            outcome=RunOutcome.RUNNING,
            started_at=NOW,
            steps=(StepRecord("launch", StepStatus.RUNNING, started_at=NOW),),
        )

    def progress(self, incident_id: str) -> RunProgress | None:
        return self.runs.get(incident_id)

    def active(self) -> int:
        return sum(1 for p in self.runs.values() if p.outcome is RunOutcome.RUNNING)

    def finish(self, incident_id: str, outcome: RunOutcome, detail: str = "") -> None:
        p = self.runs[incident_id]
        step = StepRecord(
            "launch",
            StepStatus.DONE if outcome is RunOutcome.SUCCEEDED else StepStatus.FAILED,
            NOW,
            NOW + 1,
        )
        self.runs[incident_id] = RunProgress(
            p.run_id,
            incident_id,
            p.playbook,
            outcome,
            steps=(step,),
            started_at=p.started_at,
            ended_at=NOW + 1,
            detail=detail,
        )


def make(
    tmp_path: Path, runner: Runner | None = None, started_at: float = NOW - 3600, **policy: object
) -> Cycle:
    store = IncidentStore(tmp_path)
    return Cycle(
        PolicyConfig.model_validate(policy),
        TimingConfig(),
        store,
        runner if runner is not None else FakeRunner(),
        started_at,
    )


def test_healthy_fleet_says_no_action(tmp_path: Path) -> None:
    """A healthy fleet opens nothing and says how many are healthy."""
    cycle = make(tmp_path)
    report = cycle.tick(World.healthy().snapshot(), NOW)
    assert report.summary == "no action: 13/13 healthy"
    assert report.watcher_state is WatcherState.OK
    assert report.open_incidents == ()


def test_stopped_instance_is_replaced_then_recovered(tmp_path: Path) -> None:
    """A stopped app server: incident, app_server.replace started, steps followed,
    and recovered once the run succeeded and the (retired) target no longer counts."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    world = World.healthy().stop("app-3")
    report = cycle.tick(world.snapshot(), NOW)
    assert report.summary == "started app_server.replace for app-3"
    (plan,) = runner.submitted
    assert (plan.playbook.value, plan.targets, plan.zone, plan.avoid_zones) == (
        "app_server.replace",
        (iid("app-3"),),
        "us-east-1b",
        (),
    )
    inc = cycle.store.open_incidents()[0]
    assert (inc.state, inc.scope_key, inc.target_names) == (
        IncidentState.ACTING,
        "instance:i-app-3",
        ("app-3",),
    )
    report = cycle.tick(world.snapshot(), NOW + 1)
    assert report.summary == "acting: app_server.replace for app-3 (step launch)"
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    report = cycle.tick(world.snapshot(), NOW + 2)
    done = cycle.store.get(inc.id)
    assert done is not None
    assert (done.outcome, done.recovered_at, done.closed_at) == (
        IncidentOutcome.RECOVERED,
        NOW + 2,
        NOW + 2,
    )
    assert [s.status for s in done.steps] == [StepStatus.DONE]
    assert iid("app-3") in cycle.store.retired()
    assert report.summary == "no action: 12/12 healthy"


def test_null_runner_gives_detected_only_which_survives_healing(tmp_path: Path) -> None:
    """Without a runner the incident is detected only, and stays so when it heals."""
    cycle = make(tmp_path, NullRunner())
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    (inc,) = report.open_incidents
    assert inc.outcome is IncidentOutcome.DETECTED_ONLY
    assert inc.playbook is None or inc.playbook.value == "app_server.replace"
    assert report.summary == "detected only: app-3 instance_stopped, no action"
    cycle.tick(World.healthy().snapshot(), NOW + 1)
    closed = cycle.store.get(inc.id)
    assert closed is not None
    assert (closed.outcome, closed.closed_at) == (IncidentOutcome.DETECTED_ONLY, NOW + 1)


def test_warm_up_blocks_and_healing_before_action_clears(tmp_path: Path) -> None:
    """During warm-up the incident is blocked with the time left; healed before any
    action it ends cleared."""
    cycle = make(tmp_path, started_at=NOW - 10)
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    assert report.summary == "blocked: app-3 replace, warm-up: 20 s left"
    assert report.watcher_state is WatcherState.WARMING_UP
    (inc,) = report.open_incidents
    assert report.gate_reasons[inc.id] == ("warm-up: 20 s left",)
    cycle.tick(World.healthy().snapshot(), NOW + 1)
    closed = cycle.store.get(inc.id)
    assert closed is not None
    assert closed.outcome is IncidentOutcome.CLEARED


def test_failed_run_then_cooldown_blocks_a_second_replacement(tmp_path: Path) -> None:
    """A failed run leaves the incident failed until the finding clears; a new incident
    on the same instance within the cooldown is blocked and says until when."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, cooldown="10m")
    stopped = World.healthy().stop("app-3")
    (first,) = cycle.tick(stopped.snapshot(), NOW).open_incidents
    runner.finish(first.id, RunOutcome.FAILED, "launch refused")
    report = cycle.tick(stopped.snapshot(), NOW + 1)
    assert report.summary == "failed: app-3 replace: launch refused"
    cycle.tick(World.healthy().snapshot(), NOW + 2)
    ended = cycle.store.get(first.id)
    assert ended is not None
    assert ended.outcome is IncidentOutcome.FAILED
    report = cycle.tick(stopped.snapshot(), NOW + 3)
    assert report.summary == "blocked: app-3 replace, cooldown until 03:56Z"
    assert len(runner.submitted) == 1


def test_pause_blocks_and_resume_acts(tmp_path: Path) -> None:
    """Paused, an incident is blocked with the reason; resumed, the next tick acts."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    cycle.pause(NOW, by="test")
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    assert report.summary.startswith("blocked: app-3 replace, paused: by test at")
    assert report.watcher_state is WatcherState.PAUSED
    assert cycle.resume(NOW + 1)
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW + 1)
    assert report.summary == "started app_server.replace for app-3"


def test_config_kill_switch_survives_resume(tmp_path: Path) -> None:
    """policy.paused in the config is a kill switch the API cannot lift."""
    cycle = make(tmp_path, paused=True)
    assert not cycle.resume(NOW)
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    assert "paused: kill switch in the config" in report.summary


def test_dry_run_records_and_never_acts(tmp_path: Path) -> None:
    """Dry-run decides and records what it would do, and submits nothing."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, dry_run=True)
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    assert runner.submitted == []
    (inc,) = report.open_incidents
    assert inc.outcome is IncidentOutcome.BLOCKED
    assert inc.gate_reasons == ("dry-run: would start app_server.replace for app-3",)
    assert report.dry_run


def _region_down(world: World) -> World:
    world.provider_blind("eu-west-1")
    for n in ("db-3", "app-eu-1", "lb-eu-1"):
        world.dark(n, health=Health.UNKNOWN)
    return world


def test_region_waits_for_approval_then_fails_over(tmp_path: Path) -> None:
    """A region incident waits for approval; once approved the next tick starts
    region.failover. Approving what is not waiting is refused."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    report = cycle.tick(_region_down(World.healthy()).snapshot(), NOW)
    (inc,) = report.open_incidents
    assert inc.outcome is IncidentOutcome.AWAITING_APPROVAL
    assert (
        report.summary == f"awaiting approval: region eu-west-1 failover (drwatch approve {inc.id})"
    )
    with pytest.raises(IncidentNotFoundError):
        cycle.approve("inc-nope", NOW)
    cycle.approve(inc.id, NOW + 1, by="test")
    report = cycle.tick(_region_down(World.healthy()).snapshot(), NOW + 1)
    assert report.summary == "started region.failover for app-eu-1,db-3,lb-eu-1"
    with pytest.raises(NotAwaitingApprovalError):
        cycle.approve(inc.id, NOW + 2)


def test_provider_api_outage_is_detected_never_acted_on(tmp_path: Path) -> None:
    """API down with instances fine: one provider_api incident, detected only."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    report = cycle.tick(World.healthy().provider_blind("us-east-1").snapshot(), NOW)
    (inc,) = report.open_incidents
    assert (inc.scope.value, inc.outcome) == ("provider_api", IncidentOutcome.DETECTED_ONLY)
    assert inc.gate_reasons == ("detect only: provider_api_down is never acted on",)
    assert runner.submitted == []


def test_watcher_impaired_opens_nothing_and_closes_nothing(tmp_path: Path) -> None:
    """Canaries down: no incident opens, an open one is left as it is, nothing acts."""
    runner = FakeRunner()
    cycle = make(tmp_path, NullRunner())
    (inc,) = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW).open_incidents
    world = World.healthy().stop("app-5")
    world.layer("canary-a", Layer.CANARY, Health.DOWN).layer("canary-b", Layer.CANARY, Health.DOWN)
    report = cycle.tick(world.snapshot(), NOW + 1)
    assert report.summary == "watcher impaired: canaries failing, not acting"
    assert report.watcher_state is WatcherState.IMPAIRED
    assert [i.id for i in report.open_incidents] == [inc.id]
    assert runner.submitted == []


def test_zone_outage_runs_one_plan_per_group_in_turn(tmp_path: Path) -> None:
    """A zone incident runs each affected group's playbook in turn, avoiding the zone."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, blast_radius=1.0)
    world = _zone_1a_lost()
    report = cycle.tick(world.snapshot(), NOW)
    (inc,) = report.open_incidents
    assert inc.scope_key == "zone:us-east-1a"
    assert inc.playbooks
    assert [p.value for p in inc.playbooks] == [
        "load_balancer.failover_eip",
        "database.recover",
        "app_server.replace",
    ]
    for step in range(3):
        plan = runner.submitted[-1]
        assert plan.avoid_zones == ("us-east-1a",)
        runner.finish(inc.id, RunOutcome.SUCCEEDED)
        cycle.tick(world.snapshot(), NOW + 1 + step)
    assert [p.group for p in runner.submitted] == ["web-lb", "db", "app"]
    done = cycle.store.get(inc.id)
    assert done is not None
    assert done.outcome is IncidentOutcome.RECOVERED


def _zone_1a_lost() -> World:
    world = World.healthy().zone_state("us-east-1a", "impaired")
    for n in US_EAST_1A:
        world.dark(n)
    return world


def test_pause_mid_zone_recovery_blocks_the_next_group_then_resume_recovers(
    tmp_path: Path,
) -> None:
    """Paused while a zone's first group is being recovered: the run in flight is shown
    held, the next group's plan goes through the gates and is held with the reason (the
    incident is blocked, never failed); resumed, the remaining groups run and the
    incident recovers."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, blast_radius=1.0)
    world = _zone_1a_lost()
    (inc,) = cycle.tick(world.snapshot(), NOW).open_incidents
    cycle.pause(NOW, by="test")
    report = cycle.tick(world.snapshot(), NOW + 1)
    (held,) = report.open_incidents
    assert (held.state, held.outcome) == (IncidentState.ACTING, IncidentOutcome.BLOCKED)
    assert held.gate_reasons[0].startswith("paused: by test at")
    assert "load_balancer.failover_eip stops before its next step" in held.gate_reasons[0]
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    report = cycle.tick(world.snapshot(), NOW + 2)
    (blocked,) = report.open_incidents
    assert (blocked.state, blocked.outcome) == (IncidentState.OPEN, IncidentOutcome.BLOCKED)
    assert blocked.gate_reasons[0].startswith("paused: by test at")
    assert report.summary.startswith("blocked: zone us-east-1a failover_eip, paused: by test")
    assert [p.group for p in runner.submitted] == ["web-lb"]
    assert cycle.resume(NOW + 3)
    for k in range(3):
        cycle.tick(world.snapshot(), NOW + 3 + k)
        if k < 2:
            runner.finish(inc.id, RunOutcome.SUCCEEDED)
    assert [p.group for p in runner.submitted] == ["web-lb", "db", "app"]
    done = cycle.store.get(inc.id)
    assert done is not None
    assert done.outcome is IncidentOutcome.RECOVERED
    assert [p.value for p in done.playbooks] == [
        "load_balancer.failover_eip",
        "database.recover",
        "app_server.replace",
    ]


@dataclass
class BusyRunner(FakeRunner):
    """Also runs `busy` runs the cycle did not submit (say, resumed from its journal)."""

    busy: int = 0

    def active(self) -> int:
        return super().active() + self.busy


def test_the_next_group_waits_for_the_concurrency_budget(tmp_path: Path) -> None:
    """A zone's next group is decided like a first plan: with the only run slot taken,
    it is blocked by the concurrency gate, not submitted around it."""
    runner = BusyRunner()
    cycle = make(tmp_path, runner, blast_radius=1.0, max_concurrent=1)
    world = _zone_1a_lost()
    (inc,) = cycle.tick(world.snapshot(), NOW).open_incidents
    runner.busy = 1
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    (zone,) = cycle.tick(world.snapshot(), NOW + 1).open_incidents
    assert len(runner.submitted) == 1
    assert zone.outcome is IncidentOutcome.BLOCKED
    assert zone.gate_reasons == ("concurrency: 1 of 1 playbook runs active",)
    runner.busy = 0
    cycle.tick(world.snapshot(), NOW + 2)
    assert [p.group for p in runner.submitted] == ["web-lb", "db"]


def test_concurrency_budget_holds_the_second_incident(tmp_path: Path) -> None:
    """With one run allowed, the second incident waits and says why."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, max_concurrent=1)
    report = cycle.tick(World.healthy().stop("app-1").stop("app-3").snapshot(), NOW)
    assert len(runner.submitted) == 1
    blocked = [i for i in report.open_incidents if i.outcome is IncidentOutcome.BLOCKED]
    assert blocked[0].gate_reasons == ("concurrency: 1 of 1 playbook runs active",)


def test_blast_radius_stops_a_mass_replacement(tmp_path: Path) -> None:
    """No more than half the app group replaced within the window: the fourth waits."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, max_concurrent=10)
    world = World.healthy().stop("app-1").stop("app-3").stop("app-5").stop("app-4")
    report = cycle.tick(world.snapshot(), NOW)
    assert len(runner.submitted) == 3
    (blocked,) = [i for i in report.open_incidents if i.outcome is IncidentOutcome.BLOCKED]
    assert blocked.gate_reasons[0].startswith("blast radius: replacing 4 of 6 in group app")


def test_degraded_turning_dead_is_decided_afresh(tmp_path: Path) -> None:
    """agent_down is detected only; when the same instance then dies, the incident
    follows the new finding and acts."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    world = World.healthy().layer("app-2", Layer.AGENT, Health.DOWN)
    (inc,) = cycle.tick(world.snapshot(), NOW).open_incidents
    assert inc.outcome is IncidentOutcome.DETECTED_ONLY
    report = cycle.tick(World.healthy().stop("app-2").snapshot(), NOW + 1)
    assert report.summary == "started app_server.replace for app-2"
    again = cycle.store.get(inc.id)
    assert again is not None
    assert again.finding == "instance_stopped"
    assert (again.opened_finding, again.opened_evidence) == ("agent_down", inc.evidence)


def test_terminated_target_leaving_the_fleet_keeps_the_incident_open(tmp_path: Path) -> None:
    """A blocked incident whose instance left the fleet has not healed: it stays open."""
    cycle = make(tmp_path, started_at=NOW)
    (inc,) = cycle.tick(World.healthy().stop("app-3", "terminated").snapshot(), NOW).open_incidents
    world = World.healthy()
    world.fleet = type(world.fleet)(tuple(i for i in world.fleet if i.name != "app-3"))
    report = cycle.tick(world.snapshot(), NOW + 1)
    assert [i.id for i in report.open_incidents] == [inc.id]


def test_incidents_and_pause_survive_a_restart(tmp_path: Path) -> None:
    """A new cycle on the same state directory sees the open incident and the pause."""
    cycle = make(tmp_path, NullRunner())
    (inc,) = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW).open_incidents
    cycle.pause(NOW)
    cycle.store.close()
    again = make(tmp_path, NullRunner())
    assert again.paused
    assert [i.id for i in again.store.open_incidents()] == [inc.id]
    report = again.tick(World.healthy().stop("app-3").snapshot(), NOW + 1)
    assert [i.id for i in report.open_incidents] == [inc.id]


def test_unknown_evidence_neither_ends_nor_decides_an_incident(tmp_path: Path) -> None:
    """After a restart with no observations yet, an open incident is not cleared and
    not acted on: unknown is not healed."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, started_at=NOW)
    (inc,) = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW).open_incidents
    blind = World.healthy()
    blind.health.clear()
    report = cycle.tick(blind.snapshot(), NOW + 60)
    assert [i.id for i in report.open_incidents] == [inc.id]
    assert runner.submitted == []
    assert report.open_incidents[0].outcome is IncidentOutcome.BLOCKED


def test_summary_is_logged_once_per_change(tmp_path: Path) -> None:
    """SummaryLog logs a summary when it changes, not on every tick."""
    cycle = make(tmp_path, NullRunner())
    logged = SummaryLog()
    healthy = World.healthy().snapshot()
    assert logged(cycle.tick(healthy, NOW))
    assert not logged(cycle.tick(healthy, NOW + 1))
    assert logged(cycle.tick(World.healthy().stop("app-3").snapshot(), NOW + 2))


class RefusingRunner(FakeRunner):
    def submit(self, plan: Plan) -> None:
        raise DrwatchError(f"no playbook {plan.playbook.value}")


def test_a_plan_the_runner_refuses_fails_the_incident(tmp_path: Path) -> None:
    """When the runner refuses a plan, the incident is failed with its word, not stuck."""
    cycle = make(tmp_path, RefusingRunner())
    report = cycle.tick(World.healthy().stop("app-3").snapshot(), NOW)
    (inc,) = report.open_incidents
    assert inc.outcome is IncidentOutcome.FAILED
    assert inc.detail == "the runner refused app_server.replace: no playbook app_server.replace"


def test_zone_targets_that_go_dark_later_get_their_own_plan(tmp_path: Path) -> None:
    """A zone reported impaired with one instance lost acts on it; a second one lost
    while the first plan runs gets the next plan; then the zone incident recovers."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    world = World.healthy().zone_state("us-east-1c", "impaired").dark("app-6")
    (inc,) = cycle.tick(world.snapshot(), NOW).open_incidents
    assert runner.submitted[-1].targets == (iid("app-6"),)
    world.dark("app-5")
    report = cycle.tick(world.snapshot(), NOW + 1)
    assert report.open_incidents[0].target_names == ("app-6", "app-5")
    assert len(runner.submitted) == 1
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    cycle.tick(world.snapshot(), NOW + 2)
    assert runner.submitted[-1].targets == (iid("app-5"),)
    assert runner.submitted[-1].avoid_zones == ("us-east-1c",)
    runner.finish(inc.id, RunOutcome.SUCCEEDED)
    cycle.tick(world.snapshot(), NOW + 3)
    done = cycle.store.get(inc.id)
    assert done is not None
    assert (done.outcome, done.closed_at) == (IncidentOutcome.RECOVERED, NOW + 3)
    assert [s.detail for s in done.steps] == ["[app-6]", "[app-5]"]


def test_zone_with_a_lost_replica_recovers_the_service_and_stays_open(tmp_path: Path) -> None:
    """Zone us-east-1b lost: the standby LB and app servers are replaced; the replica has
    no playbook, so the incident is recovered (saying what is left) and stays open until
    the zone comes back."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, blast_radius=1.0)
    lost = World.healthy().zone_state("us-east-1b", "impaired")
    for n in ("lb-2", "app-3", "app-4", "db-2"):
        lost.dark(n)
    (inc,) = cycle.tick(lost.snapshot(), NOW).open_incidents
    for step in range(2):
        runner.finish(inc.id, RunOutcome.SUCCEEDED)
        cycle.tick(lost.snapshot(), NOW + 1 + step)
    assert [p.playbook.value for p in runner.submitted] == [
        "load_balancer.failover_eip",
        "app_server.replace",
    ]
    report = cycle.tick(lost.snapshot(), NOW + 3)
    (still,) = report.open_incidents
    assert still.outcome is IncidentOutcome.RECOVERED
    assert still.detail == "recovered; no playbook for db-2: left to the operator"
    cycle.tick(World.healthy().snapshot(), NOW + 4)
    closed = cycle.store.get(inc.id)
    assert closed is not None
    assert (closed.outcome, closed.closed_at) == (IncidentOutcome.RECOVERED, NOW + 4)


def test_a_failed_run_that_replaced_nothing_does_not_count_toward_blast_radius(
    tmp_path: Path,
) -> None:
    """With room for one replacement in the group, a failed first attempt (nothing
    replaced) does not hold a second instance's replacement."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner, blast_radius=0.2)
    world = World.healthy().stop("app-1")
    (first,) = cycle.tick(world.snapshot(), NOW).open_incidents
    runner.finish(first.id, RunOutcome.FAILED, "launch refused")
    cycle.tick(world.snapshot(), NOW + 1)
    report = cycle.tick(world.stop("app-3").snapshot(), NOW + 2)
    assert report.summary == "started app_server.replace for app-3"


def _untagged_databases_reporting_roles() -> World:
    """No drwatch:db-role tags; db-1's agent says primary, db-2's and db-3's replica."""
    world = World.healthy()
    world.fleet = type(world.fleet)(
        tuple(replace(i, tags=()) if i.role.value == "database" else i for i in world.fleet)
    )
    for name, role in (("db-1", "primary"), ("db-2", "replica"), ("db-3", "replica")):
        facts = {"checks": {"database": {"kind": "database", "data": {"role": role}}}}
        world.layer(name, Layer.AGENT, Health.UP, detail=facts)
    return world


def _only_the_primary_is_recovered(report: TickReport, runner: FakeRunner) -> None:
    by_target = {i.target_names: i for i in report.open_incidents}
    assert by_target[("db-2",)].outcome is IncidentOutcome.DETECTED_ONLY
    assert [p.targets for p in runner.submitted] == [(iid("db-1"),)]


def test_a_lost_replica_is_known_by_the_role_it_reported(tmp_path: Path) -> None:
    """Untagged databases: db-2 reported `replica` while it answered; lost together with
    the primary, it is still a replica (detected only) and db-1 gets database.recover."""
    runner = FakeRunner()
    cycle = make(tmp_path, runner)
    world = _untagged_databases_reporting_roles()
    cycle.tick(world.snapshot(), NOW)
    report = cycle.tick(world.stop("db-2").stop("db-1").snapshot(), NOW + 1)
    _only_the_primary_is_recovered(report, runner)


def test_a_role_heard_before_a_restart_still_tells_a_lost_replica(tmp_path: Path) -> None:
    """db-2 reported `replica` to a drwatch that then stopped; db-1 and db-2 are lost
    while it is down. The restarted drwatch reads the role from its store: db-2 is
    detected only, and only db-1 gets database.recover."""
    world = _untagged_databases_reporting_roles()
    before = make(tmp_path)
    before.tick(world.snapshot(), NOW)
    before.store.close()
    runner = FakeRunner()
    after = make(tmp_path, runner)
    report = after.tick(world.stop("db-2").stop("db-1").snapshot(), NOW + 1)
    _only_the_primary_is_recovered(report, runner)


def test_a_blind_watcher_is_impaired_not_ok(tmp_path: Path) -> None:
    """Discovery refused from the start: no fleet, groups configured. The tick reports the
    watcher impaired with the reason, not `ok` and not healthy."""
    cycle = make(tmp_path)
    blind = Snapshot(
        taken_at=NOW,
        fleet=Fleet(),
        discovery=Discovery(MappingProxyType({"us-east-1": "AuthFailure: refused"}), ("app",)),
    )
    report = cycle.tick(blind, NOW)
    assert report.watcher_state is WatcherState.IMPAIRED
    assert report.watcher_reason == (
        "no instance found of group(s) app; discovery failing (us-east-1: AuthFailure: refused)"
    )
    assert report.summary.startswith("watcher impaired: no instance found of group(s) app;")
    assert report.open_incidents == ()


def test_an_incident_past_its_rto_is_reported_with_its_objective(tmp_path: Path) -> None:
    """RTO watch: a blocked outage still open past the RTO of its group's data class is
    in the tick's report with the objective; recovered or alert-only ones are not."""
    policy = RtoPolicy(overall=600.0, by_group={"db": ("orders", 120.0)})
    cycle = Cycle(
        PolicyConfig.model_validate({"max_concurrent": 1}),
        TimingConfig(),
        IncidentStore(tmp_path),
        NullRunner(),
        NOW - 3600,
        rto=policy,
    )
    world = World.healthy().stop("db-1").stop("app-3").layer("app-2", Layer.AGENT, Health.DOWN)
    assert cycle.tick(world.snapshot(), NOW).rto_overdue == ()
    report = cycle.tick(world.snapshot(), NOW + 121)
    (late,) = report.rto_overdue
    assert late.incident.target_names == ("db-1",)
    assert (late.objective, late.data_class) == (120.0, "orders")
    assert late.reason == "instance:i-db-1 open 121 s, past its RTO of data class orders of 120 s"
    alert = rto_alert(late.incident, late.reason)
    assert (alert.labels["alertname"], alert.labels["incident"]) == (
        "DrwatchRtoBreached",
        late.incident.id,
    )
    assert alert.summary.startswith(late.reason + "; drwatch is ")
    report = cycle.tick(world.snapshot(), NOW + 601)
    assert {o.incident.target_names for o in report.rto_overdue} == {("db-1",), ("app-3",)}


def test_an_instance_started_again_gets_the_boot_grace_and_keeps_its_cause(
    tmp_path: Path,
) -> None:
    """app-3 stopped (incident held by a pause), then started again: while it boots, its
    agent and app still refused since the stop, it is not taken for a dead host after the
    dead grace. The incident still says instance_stopped, as it opened."""
    cycle = make(tmp_path)
    cycle.pause(NOW, by="test")
    (inc,) = cycle.tick(World.healthy().stop("app-3", since=NOW).snapshot(), NOW).open_incidents
    booting = World.healthy().dark("app-3", since=NOW)
    booting.layer("app-3", Layer.PROVIDER, Health.UP, since=NOW + 10, detail={"state": "running"})
    report = cycle.tick(booting.snapshot(), NOW + 60)
    assert [d.finding.value for d in report.assessment.warnings] == ["instance_suspect"]
    assert "booting" in report.assessment.warnings[0].evidence
    (still,) = report.open_incidents
    assert (still.id, still.finding, still.opened_finding) == (
        inc.id,
        "instance_stopped",
        "instance_stopped",
    )
