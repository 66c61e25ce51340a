"""The decision gates, one at a time: each holds with a reason a person can act on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from drwatch.config import PolicyConfig
from drwatch.decide import GateInput, decide, plans_for
from drwatch.decide.gates import (
    gate_blast_radius,
    gate_concurrency,
    gate_cooldown,
    gate_dry_run,
    gate_paused,
    gate_warmup,
)
from drwatch.model import Health, Layer, Plan, PlaybookName, Scope
from drwatch.model.incident import Incident, IncidentOutcome
from tests.scenarios.world import RULES, World, iid

# 2026-11-26 14:00:00 UTC, so that the cooldown reads as a wall-clock time.
T = 1_795_701_600.0


def incident(
    scope: Scope = Scope.INSTANCE, targets: tuple[str, ...] = ("i-app-3",), **kw: object
) -> Incident:
    base = dict(
        id="inc-1",
        scope=scope,
        scope_key=f"{scope.value}:x",
        finding="instance_stopped",
        severity="outage",
        region="us-east-1",
        zone="us-east-1b",
        roles=("app_server",),
        groups=("app",),
        target_ids=targets,
        target_names=tuple(t[2:] for t in targets),
        opened_at=T,
        updated_at=T,
    )
    base.update(kw)
    return Incident(**base)  # type: ignore[arg-type]


def plan(targets: tuple[str, ...] = ("i-app-3",), group: str = "app") -> Plan:
    return Plan("inc-1", PlaybookName.APP_REPLACE, "us-east-1", "us-east-1b", group, targets)


def gi(**kw: object) -> GateInput:
    base: dict[str, object] = dict(
        now=T,
        started_at=T - 3600,
        policy=PolicyConfig(),
        incident=incident(),
        plans=(plan(),),
        group_sizes={"app": 6},
        names={"i-app-3": "app-3"},
    )
    base.update(kw)
    return GateInput(**base)  # type: ignore[arg-type]


def test_all_gates_pass_and_it_acts() -> None:
    """With nothing in the way, the decision is to act, with no reasons."""
    d = decide(gi())
    assert (d.act, d.outcome, d.reasons) == (True, None, ())


def test_paused_says_so() -> None:
    """The kill switch holds every action and says who paused."""
    assert (
        gate_paused(gi(paused=True, pause_note="by alice at 13:50Z"))
        == "paused: by alice at 13:50Z"
    )


def test_warmup_counts_down() -> None:
    """Within warm-up after start, the reason says how long is left."""
    assert (
        gate_warmup(gi(started_at=T - 10, policy=PolicyConfig(warmup=50.0))) == "warm-up: 40 s left"
    )
    assert gate_warmup(gi(started_at=T - 60, policy=PolicyConfig(warmup=50.0))) is None


def test_cooldown_per_scope_key_and_target() -> None:
    """An action on the same scope key (or the same target) within the cooldown holds
    the next one until a stated time; other targets are free."""
    before = incident(id="inc-0", acted_at=T - 300, scope_key="instance:x")
    assert gate_cooldown(gi(recent=(before,))) == "cooldown until 14:05Z"
    other = incident(id="inc-0", acted_at=T - 300, scope_key="instance:y", targets=("i-app-9",))
    assert gate_cooldown(gi(recent=(other,))) is None
    old = incident(id="inc-0", acted_at=T - 700, scope_key="instance:x")
    assert gate_cooldown(gi(recent=(old,))) is None


def test_cooldown_follows_a_member_to_its_replacement() -> None:
    """The replacement of app-3 has a new id but is still app-3 of group app: dying within
    the cooldown, it is not replaced again; an app-3 of another group is free."""
    first = incident(id="inc-0", acted_at=T - 300, scope_key="instance:y", targets=("i-app-3",))
    again = gi(
        incident=incident(scope_key="instance:z", targets=("i-new",), target_names=("app-3",))
    )
    assert gate_cooldown(replace(again, recent=(first,))) == "cooldown until 14:05Z"
    elsewhere = replace(first, groups=("app-eu",))
    assert gate_cooldown(replace(again, recent=(elsewhere,))) is None


def test_blast_radius_counts_recent_replacements_in_the_group() -> None:
    """Three of six already replaced within the window: a fourth exceeds 50%."""
    recent = tuple(
        incident(id=f"inc-r{n}", acted_at=T - 60, target_ids=(f"i-app-{n}",)) for n in (1, 2, 4)
    )
    reason = gate_blast_radius(gi(replacing=recent, group_of={}))
    assert reason == "blast radius: replacing 4 of 6 in group app within 30m exceeds 50% (limit 3)"
    assert gate_blast_radius(gi(replacing=recent[:2])) is None


def test_blast_radius_lets_a_group_of_one_recover() -> None:
    """A group of one may still replace its one member."""
    assert gate_blast_radius(gi(group_sizes={"app": 1})) is None


def test_concurrency_budget() -> None:
    """At the budget, the reason gives the count."""
    assert gate_concurrency(gi(active_runs=2)) == "concurrency: 2 of 2 playbook runs active"
    assert gate_concurrency(gi(active_runs=1)) is None


def test_dry_run_says_what_it_would_do() -> None:
    """Dry-run records the playbook and targets it would have run."""
    reason = gate_dry_run(gi(policy=PolicyConfig(dry_run=True)))
    assert reason == "dry-run: would start app_server.replace for app-3"


def test_region_waits_for_approval_by_default_and_zone_can_be_made_to() -> None:
    """Approval by scope: region by default; a zone when configured; approved passes."""
    region = decide(gi(incident=incident(Scope.REGION)))
    assert region.outcome is IncidentOutcome.AWAITING_APPROVAL
    assert region.reasons[0].startswith("approval required for region scope")
    zone_policy = PolicyConfig(approval_required=("zone", "region"))
    assert (
        decide(gi(incident=incident(Scope.ZONE), policy=zone_policy)).outcome
        is IncidentOutcome.AWAITING_APPROVAL
    )
    approved = incident(Scope.REGION, approved_at=T - 1)
    assert decide(gi(incident=approved)).act


def test_approval_with_another_gate_is_blocked_with_both_reasons() -> None:
    """Approval plus warm-up: blocked, and both reasons are recorded."""
    d = decide(gi(incident=incident(Scope.REGION), started_at=T - 1))
    assert d.outcome is IncidentOutcome.BLOCKED
    assert len(d.reasons) == 2


def test_no_plan_is_detected_only() -> None:
    """An alert (or a finding without a playbook) is detected only, with the reason."""
    d = decide(
        gi(
            incident=incident(Scope.PROVIDER_API, severity="alert", finding="provider_api_down"),
            plans=(),
        )
    )
    assert (d.act, d.outcome) == (False, IncidentOutcome.DETECTED_ONLY)
    assert d.reasons == ("detect only: provider_api_down is never acted on",)


def _lb_incident(world: World, name: str) -> Incident:
    inst = world.fleet.get(iid(name))
    assert inst is not None
    return incident(
        target_ids=(inst.id,), roles=("load_balancer",), groups=(inst.group,), zone=inst.zone
    )


def test_lb_fails_over_to_a_healthy_standby_else_is_replaced() -> None:
    """A lost LB with a healthy peer gets failover_eip; with no healthy peer, replace."""
    world = World.healthy().stop("lb-1")
    (p,) = plans_for(_lb_incident(world, "lb-1"), world.snapshot(), RULES)
    assert p.playbook is PlaybookName.LB_FAILOVER_EIP
    world.stop("lb-2")
    (p,) = plans_for(_lb_incident(world, "lb-1"), world.snapshot(), RULES)
    assert p.playbook is PlaybookName.LB_REPLACE


def test_database_primary_recovers_replica_has_no_playbook() -> None:
    """database.recover for the primary; a replica has no playbook (detected only)."""
    world = World.healthy()
    db1 = incident(target_ids=(iid("db-1"),), roles=("database",), groups=("db",))
    (p,) = plans_for(db1, world.snapshot(), RULES)
    assert p.playbook is PlaybookName.DB_RECOVER
    db2 = incident(target_ids=(iid("db-2"),), roles=("database",), groups=("db",))
    assert plans_for(db2, world.snapshot(), RULES) == ()


def test_zone_plans_one_per_group_avoiding_the_zone() -> None:
    """A zone incident plans per group, each avoiding the lost zone: the load balancer
    first (traffic), then the database, then the app servers."""
    world = World.healthy()
    zone = incident(
        Scope.ZONE,
        targets=tuple(iid(n) for n in ("app-1", "app-2", "db-1", "lb-1")),
        zone="us-east-1a",
        roles=("app_server", "database", "load_balancer"),
        groups=("app", "db", "web-lb"),
    )
    plans = plans_for(zone, world.snapshot(), RULES)
    assert [(p.group, p.playbook.value, p.avoid_zones) for p in plans] == [
        ("web-lb", "load_balancer.failover_eip", ("us-east-1a",)),
        ("db", "database.recover", ("us-east-1a",)),
        ("app", "app_server.replace", ("us-east-1a",)),
    ]
    assert plans[2].targets == (iid("app-1"), iid("app-2"))


def test_database_role_from_the_agents_database_check() -> None:
    """Without a role tag, the agent's database check tells primary from replica."""
    world = World.healthy()
    world.fleet = type(world.fleet)(
        tuple(i if i.name != "db-2" else replace(i, tags=()) for i in world.fleet)
    )

    def facts(role: str) -> dict[str, object]:
        return {"checks": {"database": {"kind": "database", "data": {"role": role}}}}

    world.layer("db-2", Layer.AGENT, Health.UP, detail=facts("replica"))
    db2 = incident(target_ids=(iid("db-2"),), roles=("database",), groups=("db",))
    assert plans_for(db2, world.snapshot(), RULES) == ()
    world.layer("db-2", Layer.AGENT, Health.UP, detail=facts("primary"))
    (p,) = plans_for(db2, world.snapshot(), RULES)
    assert p.playbook is PlaybookName.DB_RECOVER


def test_a_lost_database_is_a_replica_when_a_peer_reports_primary() -> None:
    """A lost database without a tag reports nothing; a peer reporting primary makes it
    a replica (no playbook); with no such peer it may be the primary, but its role is
    unknown: the plan to recover it as one waits for an operator's approval."""
    world = World.healthy()
    world.fleet = type(world.fleet)(
        tuple(replace(i, tags=()) if i.role.value == "database" else i for i in world.fleet)
    )
    world.stop("db-2")
    db2 = incident(target_ids=(iid("db-2"),), roles=("database",), groups=("db",))
    primary = {"checks": {"database": {"kind": "database", "data": {"role": "primary"}}}}
    world.layer("db-1", Layer.AGENT, Health.UP, detail=primary)
    assert plans_for(db2, world.snapshot(), RULES) == ()
    world.layer("db-1", Layer.AGENT, Health.UP, detail={})
    (p,) = plans_for(db2, world.snapshot(), RULES)
    assert p.playbook is PlaybookName.DB_RECOVER
    assert p.approval.startswith("the database role of db-2 is unknown")


def _postgres_facts(role: str) -> dict[str, object]:
    return {"checks": {"pg": {"kind": "postgres", "data": {"role": role}}}}


def test_the_postgres_check_outranks_the_role_tag() -> None:
    """db-1 is tagged primary but its agent's postgres check says replica (a failover
    happened since the tag was written): losing it plans nothing; db-2, tagged replica
    but reporting primary, is recovered as the primary without asking."""
    world = World.healthy()
    world.layer("db-1", Layer.AGENT, Health.UP, detail=_postgres_facts("replica"))
    world.layer("db-2", Layer.AGENT, Health.UP, detail=_postgres_facts("primary"))
    db1 = incident(target_ids=(iid("db-1"),), roles=("database",), groups=("db",))
    db2 = incident(target_ids=(iid("db-2"),), roles=("database",), groups=("db",))
    assert plans_for(db1, world.snapshot(), RULES) == ()
    (p,) = plans_for(db2, world.snapshot(), RULES)
    assert (p.playbook, p.approval) == (PlaybookName.DB_RECOVER, "")


def test_a_remembered_role_outranks_the_tag_for_a_silent_host() -> None:
    """A dead host reports nothing: the role its agent last reported decides, not a tag."""
    world = World.healthy()
    world.stop("db-1")
    db1 = incident(target_ids=(iid("db-1"),), roles=("database",), groups=("db",))
    assert plans_for(db1, world.snapshot(), RULES, known_roles={iid("db-1"): "replica"}) == ()
    (p,) = plans_for(db1, world.snapshot(), RULES)  # nothing remembered: the tag says primary
    assert p.playbook is PlaybookName.DB_RECOVER


def test_an_unknown_role_waits_for_approval_and_acts_once_approved() -> None:
    """No check, no tag, never heard: the decision is awaiting approval, with the reason
    and the command; once approved, it acts."""
    world = World.healthy()
    world.fleet = type(world.fleet)(
        tuple(replace(i, tags=()) if i.role.value == "database" else i for i in world.fleet)
    )
    world.stop("db-1")
    db1 = incident(target_ids=(iid("db-1"),), roles=("database",), groups=("db",))
    plans = plans_for(db1, world.snapshot(), RULES)
    waiting = decide(gi(incident=db1, plans=plans, group_sizes={"db": 3}))
    assert waiting.outcome is IncidentOutcome.AWAITING_APPROVAL
    (reason,) = waiting.reasons
    assert reason.startswith("approval required: the database role of db-1 is unknown")
    assert reason.endswith("drwatch approve inc-1")
    approved = replace(db1, approved_at=T)
    assert decide(gi(incident=approved, plans=plans, group_sizes={"db": 3})).act


@pytest.mark.parametrize(
    ("finding", "severity", "playbooks"),
    [
        ("region_outage", "outage", ("region.failover",)),
        # A lost standby region: an alert, and no plan even if it were graded an outage.
        ("dr_capacity_lost", "alert", ()),
        ("dr_capacity_lost", "outage", ()),
        ("region_suspect", "warning", ()),
    ],
)
def test_only_the_serving_regions_loss_plans_a_failover(
    finding: str, severity: str, playbooks: tuple[str, ...]
) -> None:
    """region.failover is planned for region_outage (the serving region lost) only."""
    inc = incident(
        Scope.REGION, ("i-db-3", "i-app-eu-1"), finding=finding, severity=severity, zone=""
    )
    plans = plans_for(inc, World.healthy().snapshot(), RULES)
    assert tuple(p.playbook.value for p in plans) == playbooks


def test_dr_capacity_lost_is_detected_only_with_its_reason() -> None:
    """With no plan, the decision is detected-only, and the reason names the finding."""
    inc = incident(Scope.REGION, ("i-db-3",), finding="dr_capacity_lost", severity="alert")
    d = decide(gi(incident=inc, plans=()))
    assert (d.act, d.outcome) == (False, IncidentOutcome.DETECTED_ONLY)
    assert d.reasons == ("detect only: dr_capacity_lost is never acted on",)
