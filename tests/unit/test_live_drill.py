"""Live drills: only live verbs, and every reason to refuse, from the fleet's state."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from drwatch import config as config_mod
from drwatch.errors import ConfigError
from drwatch.plan.live import NOT_YET, parse_live, refusals

ROOT = Path(__file__).parents[2]
CFG = config_mod.load(ROOT / "config" / "drwatch.example.toml")
UP = {"provider": {"health": "up"}, "agent": {"health": "up"}, "app": {"health": "up"}}
DOWN = {**UP, "app": {"health": "down"}}


def target(name: str, group: str, role: str, layers: dict[str, Any] = UP) -> dict[str, Any]:
    return {"id": f"i-{name}", "name": name, "group": group, "role": role,
            "region": "us-east-1", "zone": "us-east-1a", "layers": layers}  # fmt: skip


def status(**changes: Any) -> dict[str, Any]:
    targets = [target(f"app-{n}", "app", "app_server") for n in range(1, 7)]
    targets += [
        target("lb-1", "web-lb", "load_balancer"),
        target("lb-2", "web-lb", "load_balancer"),
    ]
    base = {
        "watcher": {"state": "ok", "paused": False, "dry_run": False},
        "targets": targets,
        "findings": [],
        "open_incidents": [],
    }
    return {**base, **changes}


def scenario(*events: tuple[str, str]) -> Any:
    return parse_live(
        {
            "name": "live",
            "duration": "5m",
            "event": [{"at": "5s", "do": do, "target": t} for do, t in events],
        }
    )


def test_a_healthy_fleet_and_an_approval_let_it_run() -> None:
    sc = scenario(("replace-instance", "app-3"), ("failover-lb", "lb-1"))
    assert refusals(CFG, sc, status(), approved_by="ana") == []


def test_without_approval_it_refuses() -> None:
    (reason,) = refusals(CFG, scenario(("replace-instance", "app-3")), status(), approved_by="")
    assert "approve it explicitly with --approve" in reason


def test_an_open_finding_or_incident_refuses_with_what_it_is() -> None:
    st = status(
        findings=[{"finding": "capacity_disk", "evidence": "app-1: disk / 97% (warning)"}],
        open_incidents=[{"id": "inc-1", "finding": "app_failed", "state": "acting"}],
    )
    assert refusals(CFG, scenario(("replace-instance", "app-3")), st, "ana") == [
        "finding open: capacity_disk: app-1: disk / 97% (warning)",
        "incident open: inc-1 app_failed (acting)",
    ]


def test_a_group_without_spare_capacity_refuses() -> None:
    """Six app servers, three already unhealthy: losing one more leaves 2, under the
    minimum of 3 that blast_radius 0.5 leaves."""
    st = status()
    for t in st["targets"][:3]:
        t["layers"] = DOWN
    (reason,) = refusals(CFG, scenario(("replace-instance", "app-5")), st, "ana")
    assert reason == (
        "replace-instance app-5: group app lacks spare capacity: 3 of 6 healthy; losing 1 "
        "leaves 2, under its minimum of 3 (policy.blast_radius)"
    )


def test_two_targets_in_one_group_count_together() -> None:
    sc = scenario(("failover-lb", "lb-1"), ("failover-lb", "lb-2"))
    reasons = refusals(CFG, sc, status(), "ana")
    assert reasons == [
        "failover-lb lb-2: group web-lb lacks spare capacity: 2 of 2 healthy; losing 2 "
        "leaves 0, under its minimum of 1 (policy.blast_radius)"
    ]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (("replace-instance", "db-1"), "replace-instance db-1: no such instance"),
        (
            ("replace-instance", "lb-1"),
            "replace-instance needs a app_server; lb-1 is a load_balancer",
        ),
        (("restore-test", "orders"), "restore-test orders: restore tests need drwatch's backups"),
    ],
)
def test_wrong_targets_are_named(event: tuple[str, str], expected: str) -> None:
    (reason,) = refusals(CFG, scenario(event), status(), "ana")
    assert reason.startswith(expected)


def test_paused_dry_run_or_an_unknown_state_refuses() -> None:
    st = status(watcher={"state": "impaired", "reason": "canaries fail", "paused": True,
                         "dry_run": True})  # fmt: skip
    reasons = refusals(CFG, scenario(("replace-instance", "app-3")), st, "ana")
    assert [r.split(":")[0] for r in reasons] == [
        "drwatch is paused",
        "drwatch is in dry-run mode",
        "drwatch is impaired, not ok (canaries fail)",
    ]
    assert refusals(CFG, scenario(("replace-instance", "app-3")), None, "ana") == [
        "the daemon's status API did not answer: the fleet's state is unknown"
    ]


def test_instance_approval_in_the_config_refuses() -> None:
    data = tomllib.loads((ROOT / "config" / "drwatch.example.toml").read_text())
    data["policy"]["approval_required"] = ["instance", "region"]
    cfg = config_mod.parse(data)
    (reason,) = refusals(cfg, scenario(("replace-instance", "app-3")), status(), "ana")
    assert reason.startswith("policy.approval_required includes instance")


def test_sandbox_faults_are_not_live_verbs() -> None:
    with pytest.raises(ConfigError) as info:
        scenario(("zone-outage", "us-east-1a"))
    assert info.value.problems == [
        "event[0].do: 'zone-outage' is not a live drill verb (live: failover-lb, "
        "replace-instance, restore-test); faults belong in the sandbox"
    ]


@pytest.mark.parametrize(
    ("name", "verb"),
    [("replace-app-server.toml", "replace-instance"), ("failover-lb.toml", "failover-lb")],
)
def test_shipped_live_scenarios_parse(name: str, verb: str) -> None:
    """Each shipped live scenario reads as a live drill of its one verb, runnable today."""
    sc = parse_live(tomllib.loads((ROOT / "config" / "drills" / "live" / name).read_text()))
    assert [ev.do for ev in sc.event] == [verb]
    assert verb not in NOT_YET


def schedule_cfg(tmp_path: Path, scenario_text: str, **spec: Any) -> Any:
    path = tmp_path / "s.toml"
    path.write_text(scenario_text)
    data = tomllib.loads((ROOT / "config" / "drwatch.example.toml").read_text())
    data["watcher"]["state_dir"] = str(tmp_path / "state")
    data["plan"]["live_drills"] = [{"scenario": str(path), "approved_by": "sam", **spec}]
    return config_mod.parse(data)


LIVE_TOML = (
    'name = "x"\nduration = "1m"\n[[event]]\nat = "1s"\ndo = "replace-instance"\ntarget = "app-3"\n'
)


def test_a_schedule_needs_one_of_cron_or_every_and_a_live_scenario(tmp_path: Path) -> None:
    assert schedule_cfg(tmp_path, LIVE_TOML, cron="0 10 1 3,9 *").plan.live_drills[0].cron
    for spec in ({}, {"cron": "0 10 * * *", "every": "1d"}, {"cron": "bogus"}):
        with pytest.raises(ConfigError) as info:
            schedule_cfg(tmp_path, LIVE_TOML, **spec)
        assert info.value.problems[0].startswith("plan.live_drills[0]")
    sandbox_only = LIVE_TOML.replace("replace-instance", "zone-outage")
    with pytest.raises(ConfigError) as info:
        schedule_cfg(tmp_path, sandbox_only, every="182d")
    assert "is not a live drill verb" in info.value.problems[0]


async def test_a_refused_scheduled_run_is_recorded_with_its_reasons(tmp_path: Path) -> None:
    """Refused runs are failed drills in the ledger, so a schedule that never gets to run
    reads as overdue, not as silence; nothing is touched (no provider given)."""
    from drwatch.ledger import DrillLedger
    from drwatch.plan.schedule import run_scheduled

    cfg = schedule_cfg(tmp_path, LIVE_TOML, every="182d")
    st = status(findings=[{"finding": "capacity_disk", "evidence": "app-1: disk / 97%"}])
    report = await run_scheduled(
        cfg, cfg.plan.live_drills[0], status=lambda: st, api_url="", provider=None, session=None
    )
    assert report["passed"] is False
    with DrillLedger(tmp_path / "state") as ledger:
        (rec,) = ledger.recent()
    assert (rec.kind, rec.result, rec.by) == ("live", "failed", "sam")
    assert rec.violations == ("refused: finding open: capacity_disk: app-1: disk / 97%",)
