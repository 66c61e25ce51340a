"""Metrics: the series the daemon feeds, their labels, and a clean exposition."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from drwatch.model import (
    Fleet,
    Health,
    Instance,
    Layer,
    Observation,
    PlaybookName,
    Role,
    RunOutcome,
    RunProgress,
    Scope,
    Snapshot,
    StepRecord,
    StepStatus,
    TargetHealth,
)
from drwatch.model.findings import Diagnosis, Finding
from drwatch.web.metrics import Metrics, check_buckets
from tests.support.services import assert_promtool_clean, start_site

FLEET = Fleet(
    instances=(
        Instance("i-1", "app-1", "us-east-1", "us-east-1a", Role.APP_SERVER, "app"),
        Instance("i-3", "app-3", "us-east-1", "us-east-1b", Role.APP_SERVER, "app"),
        Instance("i-9", "lb-1", "us-east-1", "us-east-1a", Role.LOAD_BALANCER, "web"),
    )
)


def _th(target: str, layer: Layer, health: Health) -> TargetHealth:
    return TargetHealth(target, layer, health, since=0.0, attempted_at=1.0, ok_at=None)


def _snapshot() -> Snapshot:
    rows = [
        _th("i-1", Layer.APP, Health.UP),
        _th("i-3", Layer.APP, Health.DOWN),
        _th("i-3", Layer.AGENT, Health.UNKNOWN),
        _th("i-9", Layer.PROVIDER, Health.UP),
        _th("us-east-1b", Layer.ZONE, Health.DOWN),
        _th("us-east-1", Layer.API, Health.UP),
        _th("web", Layer.SERVICE, Health.UP),
        _th("quad9", Layer.CANARY, Health.UP),
        _th("cloudflare", Layer.CANARY, Health.DOWN),
    ]
    return Snapshot(
        taken_at=2.0, fleet=FLEET, health=MappingProxyType({(t.target, t.layer): t for t in rows})
    )


def _run(run_id: str, outcome: RunOutcome = RunOutcome.SUCCEEDED) -> RunProgress:
    return RunProgress(
        run_id=run_id,
        incident_id="inc-1",
        playbook=PlaybookName.APP_REPLACE,
        outcome=outcome,
        steps=(
            StepRecord("launch", StepStatus.DONE, started_at=10.0, ended_at=14.0),
            StepRecord("register", StepStatus.RUNNING, started_at=14.0),
        ),
        started_at=10.0,
        ended_at=40.0 if outcome is not RunOutcome.RUNNING else None,
    )


def _fed() -> Metrics:
    m = Metrics(max_check_timeout=2.0)
    m.record_check(Observation("i-1", Layer.APP, Health.UP, attempted_at=1.0, latency_s=0.02))
    m.record_check(Observation("i-3", Layer.APP, Health.UNKNOWN, attempted_at=1.0), 2.0)
    m.update_from_snapshot(_snapshot())
    m.set_incidents_active({Scope.ZONE: 1})
    m.incident_opened(Scope.ZONE)
    m.record_run(_run("r-1"))
    m.set_scheduler_lag(0.004, 0.03)
    m.record_tick(0.003, 1_700_000_000.0)
    m.set_watcher_impaired(False)
    m.alert_delivered("alertmanager-1")
    m.alert_failed("webhook")
    return m


def _samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_target_up_is_labelled_by_instance_name_and_skips_unknown() -> None:
    """Instances appear by name with role/region/zone; unknown health is absent, not 0."""
    up = _samples(_fed(), "drwatch_target_up")
    app3 = (
        ("layer", "app"),
        ("region", "us-east-1"),
        ("role", "app_server"),
        ("target", "app-3"),
        ("zone", "us-east-1b"),
    )
    assert up[app3] == 0.0
    assert not any(dict(k)["layer"] == "agent" for k in up)
    zone = dict(next(k for k in up if dict(k)["layer"] == "zone"))
    assert zone["region"] == "us-east-1"
    assert zone["target"] == "us-east-1b"
    service = dict(next(k for k in up if dict(k)["layer"] == "service"))
    assert service["role"] == "load_balancer"


def test_targets_leaving_the_fleet_disappear() -> None:
    """A new snapshot replaces every per-target series: removed targets are gone."""
    m = _fed()
    m.update_from_snapshot(Snapshot(taken_at=3.0, fleet=Fleet()))
    assert _samples(m, "drwatch_target_up") == {}
    assert _samples(m, "drwatch_canary_up") == {}


def test_health_counts_and_canaries() -> None:
    """Counts by layer and health include unknown; canaries report 1/0 by name."""
    m = _fed()
    counts = _samples(m, "drwatch_targets")
    assert counts[(("health", "unknown"), ("layer", "agent"))] == 1.0
    assert counts[(("health", "down"), ("layer", "app"))] == 1.0
    canaries = _samples(m, "drwatch_canary_up")
    assert canaries == {(("canary", "cloudflare"),): 0.0, (("canary", "quad9"),): 1.0}


def test_a_finished_run_is_counted_once() -> None:
    """The runner reports a run on every tick; it counts once, and only when finished."""
    m = Metrics(process_metrics=False)
    m.record_run(_run("r-1", RunOutcome.RUNNING))
    m.record_run(_run("r-1"))
    m.record_run(_run("r-1"))
    runs = _samples(m, "drwatch_playbook_runs_total")
    assert runs == {(("outcome", "succeeded"), ("playbook", "app_server.replace")): 1.0}
    steps = _samples(m, "drwatch_playbook_step_duration_seconds_sum")
    assert steps == {
        (("playbook", "app_server.replace"), ("status", "done"), ("step", "launch")): 4.0
    }


def test_every_scope_is_exported_from_the_start() -> None:
    """Active incidents per scope exist at 0 before any incident, so rules see a series."""
    active = _samples(Metrics(process_metrics=False), "drwatch_incidents_active")
    assert {dict(k)["scope"] for k in active} == {s.value for s in Scope}
    assert set(active.values()) == {0.0}


@pytest.mark.parametrize(("timeout", "last"), [(2.0, 2.0), (0.3, 0.3), (5.0, 5.0), (100.0, 100.0)])
def test_check_buckets_end_at_the_timeout(timeout: float, last: float) -> None:
    """A check cannot outlast its timeout, so the largest finite bucket is the timeout."""
    buckets = check_buckets(timeout)
    assert buckets[-1] == last
    assert list(buckets) == sorted(set(buckets))


@pytest.mark.services
def test_promtool_finds_no_naming_problems() -> None:
    """`promtool check metrics` reads the exposition without a single lint warning."""
    assert_promtool_clean(_fed().exposition())


async def test_metrics_route_serves_the_registry() -> None:
    """GET /metrics on an aiohttp app returns the drwatch series in text format."""
    app = web.Application()
    _fed().add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = await start_site(runner)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            body = await resp.text()
            assert resp.status == 200
            assert resp.content_type == "text/plain"
        assert 'drwatch_checks_total{layer="app",result="up"} 1.0' in body
        assert "drwatch_build_info{" in body
    finally:
        await runner.cleanup()


def test_update_from_report_counts_incidents_by_scope() -> None:
    """A tick report sets open incidents per scope, counts openings once, flags impairment."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Change:
        scope_key: str
        change: str

    @dataclass(frozen=True)
    class Inc:
        scope: Scope

    @dataclass(frozen=True)
    class Overdue:
        incident: Inc

    @dataclass(frozen=True)
    class Report:
        watcher_state: str
        paused: bool
        open_incidents: tuple[Inc, ...]
        changes: tuple[Change, ...]
        findings: tuple[Diagnosis, ...] = ()
        rto_overdue: tuple[Overdue, ...] = ()

    m = Metrics(process_metrics=False)
    m.update_from_report(
        Report(
            "impaired",
            True,
            (Inc(Scope.ZONE), Inc(Scope.INSTANCE), Inc(Scope.INSTANCE)),
            (Change("zone:us-east-1b", "opened"), Change("instance:i-3", "updated")),
            rto_overdue=(Overdue(Inc(Scope.ZONE)),),
        )
    )
    past = _samples(m, "drwatch_incidents_past_rto")
    assert (past[(("scope", "zone"),)], past[(("scope", "instance"),)]) == (1.0, 0.0)
    active = _samples(m, "drwatch_incidents_active")
    assert active[(("scope", "zone"),)] == 1.0
    assert active[(("scope", "instance"),)] == 2.0
    assert active[(("scope", "region"),)] == 0.0
    opened = _samples(m, "drwatch_incidents_opened_total")
    assert opened[(("scope", "zone"),)] == 1.0
    assert opened[(("scope", "instance"),)] == 0.0
    assert _samples(m, "drwatch_watcher_impaired") == {(): 1.0}
    assert _samples(m, "drwatch_paused") == {(): 1.0}


def test_warnings_are_counted_by_finding_and_fall_back_to_zero() -> None:
    """Warning findings (no incident) are exported per finding; incidents are not; every
    warning finding is there at 0 from start-up and returns to 0 when it clears."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Report:
        findings: tuple[Diagnosis, ...]
        watcher_state: str = "ok"
        paused: bool = False
        open_incidents: tuple[Any, ...] = ()
        changes: tuple[Any, ...] = ()
        rto_overdue: tuple[Any, ...] = ()

    m = Metrics(process_metrics=False)
    start = _samples(m, "drwatch_warnings")
    assert start[(("finding", "capacity_disk"),)] == 0.0
    assert (("finding", "instance_stopped"),) not in start
    m.update_from_report(
        Report(
            (
                Diagnosis(Finding.CAPACITY_DISK, key="instance:i-1"),
                Diagnosis(Finding.CAPACITY_DISK, key="instance:i-2"),
                Diagnosis(Finding.CAPACITY_MEMORY, key="instance:i-2"),
                Diagnosis(Finding.INSTANCE_STOPPED, key="instance:i-3"),
            )
        )
    )
    during = _samples(m, "drwatch_warnings")
    assert during[(("finding", "capacity_disk"),)] == 2.0
    assert during[(("finding", "capacity_memory"),)] == 1.0
    assert during[(("finding", "zone_impaired"),)] == 0.0
    assert (("finding", "instance_stopped"),) not in during
    m.update_from_report(Report(()))
    assert _samples(m, "drwatch_warnings")[(("finding", "capacity_disk"),)] == 0.0


def test_trend_and_drill_series() -> None:
    """A disk's ETA shows while it grows and vanishes when it stops; a required drill
    kind that never passed reads 0 (the overdue rule fires on it); the trend warnings
    are counted under drwatch_warnings."""
    from drwatch.assess.trends import DiskTrend, Pressure, TrendReport

    m = Metrics(process_metrics=False)
    growing = DiskTrend("i-3", "app-3", "/", 60.0, 1e6, 4000.0, 30, 600.0)
    warn = Diagnosis(Finding.DISK_FULL_SOON, "instance:i-3", targets=("i-3",))
    pressure = Pressure("i-3", "app-3", "cpu", 120.0, 97.0)
    m.update_trends(TrendReport((warn,), (growing,), (pressure,)))
    m.update_drills({("live", "failed"): 50.0}, 86400.0, ["sandbox"])
    text = m.exposition().decode()
    assert 'drwatch_disk_full_eta_seconds{instance="app-3",mount="/"} 4000.0' in text
    assert 'drwatch_pressure_seconds{instance="app-3",resource="cpu"} 120.0' in text
    assert 'drwatch_warnings{finding="disk_full_soon"} 1.0' in text
    assert 'drwatch_last_drill_timestamp_seconds{kind="sandbox",result="passed"} 0.0' in text
    assert 'drwatch_last_drill_timestamp_seconds{kind="live",result="failed"} 50.0' in text
    assert "drwatch_drill_interval_seconds 86400.0" in text
    stopped = DiskTrend("i-3", "app-3", "/", 60.0, 0.0, None, 30, 600.0)
    m.update_trends(TrendReport((), (stopped,), ()))
    text = m.exposition().decode()
    assert "drwatch_disk_full_eta_seconds{" not in text
    assert 'drwatch_warnings{finding="disk_full_soon"} 0.0' in text
    assert_promtool_clean(m.exposition())
