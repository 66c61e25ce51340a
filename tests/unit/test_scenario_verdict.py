"""A drill's verdict: incidents from the daemon's API, matched against expectations."""

from __future__ import annotations

from typing import Any

from drwatch.sandbox.daemon_api import Incident, parse_incidents, status_healthy
from drwatch.sandbox.scenario import parse_scenario
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.verdict import DrillFacts, EventRecord, Sighting, build_report, summary

START = 1_800_000_000.0


def _incident(**kw: Any) -> Incident:
    base: dict[str, Any] = {
        "id": "inc-1",
        "scope": "instance",
        "role": "app_server",
        "region": "us-east-1",
        "zone": "us-east-1b",
        "targets": ("app-3",),
        "finding": "instance_stopped",
        "opened_at": START + 19.0,
        "playbook": "app_server.replace",
        "outcome": "recovered",
        "recovered_at": START + 40.0,
        "ended_at": START + 40.0,
    }
    return Incident(**{**base, **kw})


def _facts(*incidents: Incident, events: tuple[EventRecord, ...] | None = None) -> DrillFacts:
    return DrillFacts(
        start=START,
        healthy_at_s=10.0,
        ended_at_s=80.0,
        events=events or (EventRecord(15.0, "stop-instance", "app-3", result="ok"),),
        incidents=incidents,
        api_answered=True,
        rto_s=45.0,
    )


def _scenario(**extra: Any) -> Any:
    data = {
        "name": "app server crash",
        "duration": "60s",
        "event": [{"at": "5s", "do": "stop-instance", "target": "app-3"}],
        "expect": [
            {
                "scope": "instance",
                "role": "app_server",
                "targets": ["app-3"],
                "playbook": "app_server.replace",
                "outcome": "recovered",
                "within": "30s",
            }
        ],
        **extra,
    }
    return parse_scenario(data, default_topology())


def test_a_matching_incident_in_time_passes_with_times_from_the_fault() -> None:
    """detection_s and recovery_s count from the causing fault; every report field is there."""
    report = build_report(_scenario(), _facts(_incident()))
    assert report["passed"] is True
    (inc,) = report["incidents"]
    assert inc["opened_at_s"] == 19.0
    assert inc["detection_s"] == 4.0
    assert inc["recovered_at_s"] == 40.0
    assert inc["recovery_s"] == 25.0
    assert set(report) >= {
        "scenario", "passed", "objectives", "events", "incidents", "expectations", "violations",
    }  # fmt: skip
    assert report["events"][0]["at_s"] == 15.0
    assert "PASSED" in summary(report)


def test_too_slow_a_recovery_fails_the_expectation() -> None:
    """within is measured from the fault to the outcome."""
    late = _incident(recovered_at=START + 50.0, ended_at=START + 50.0)
    report = build_report(_scenario(), _facts(late))
    assert report["passed"] is False
    assert report["expectations"][0]["reason"] == "took 35.0s, within 30s"


def test_the_wrong_outcome_fails_and_says_so() -> None:
    """An incident that matches but ended otherwise is reported with its outcome."""
    report = build_report(_scenario(), _facts(_incident(outcome="failed", recovered_at=None)))
    assert report["expectations"][0]["reason"] == "outcome failed, expected recovered"


def test_an_outcome_the_incident_must_have_shown_on_its_way() -> None:
    """`seen = ["blocked"]`: met only when the drill saw the incident blocked before it
    recovered; the report lists the outcomes it showed, and what opened it."""
    expect = {"scope": "instance", "targets": ["app-3"], "outcome": "recovered"}
    scenario = _scenario(expect=[{**expect, "seen": ["blocked"]}])
    passed = build_report(
        scenario, _facts(_incident(outcomes_seen=("blocked", "recovered"), opened_finding="x"))
    )
    assert passed["expectations"][0]["met"], passed["expectations"][0]["reason"]
    assert passed["incidents"][0]["outcomes_seen"] == ["blocked", "recovered"]
    assert passed["incidents"][0]["opened_finding"] == "x"
    missed = build_report(scenario, _facts(_incident(outcomes_seen=("recovered",))))
    assert missed["expectations"][0]["reason"] == "never blocked (seen: recovered)"


def test_a_detected_only_verdict_counts_from_when_it_opened() -> None:
    """An alert stays open until healed; `within` measures its detection, not its end."""
    alert = _incident(
        scope="provider_api", targets=(), playbook=None, outcome="detected_only",
        recovered_at=None, ended_at=START + 60.0,
    )  # fmt: skip
    sc = _scenario(expect=[{"scope": "provider_api", "outcome": "detected_only", "within": "5s"}])
    events = (EventRecord(15.0, "api-outage", "us-east-1"),)
    report = build_report(sc, _facts(alert, events=events))
    assert report["expectations"][0]["met"] is True
    assert report["expectations"][0]["reason"] == "detected_only after 4.0s"


def test_two_matching_incidents_fail_the_expectation() -> None:
    """Each expectation must match exactly one incident."""
    report = build_report(_scenario(), _facts(_incident(), _incident(id="inc-2")))
    assert report["expectations"][0]["met"] is False
    assert report["expectations"][0]["reason"].startswith("2 incidents match")


def test_no_incident_fails_the_expectation() -> None:
    """Nothing detected: the expectation names what was seen (nothing)."""
    report = build_report(_scenario(), _facts())
    assert report["expectations"][0]["reason"] == "0 incidents match (seen: none)"


def test_max_incidents_and_no_playbooks_are_violations() -> None:
    """A healthy drill that saw an incident, with a playbook, fails twice over."""
    sc = _scenario(expect=[], max_incidents=0, expect_no_playbooks=True)
    report = build_report(sc, _facts(_incident()))
    assert report["violations"] == [
        "1 incidents, at most 0 allowed",
        "incident inc-1 ran app_server.replace",
    ]
    assert report["passed"] is False


def test_recovery_beyond_the_rto_is_a_violation() -> None:
    """Recovered, but later than the objective allows."""
    slow = _incident(recovered_at=START + 70.0, ended_at=START + 70.0)
    report = build_report(_scenario(expect=[]), _facts(slow))
    assert report["violations"] == ["incident inc-1 recovered in 55.0s > RTO 45s"]


def test_a_silent_api_cannot_pass_a_drill_with_expectations() -> None:
    """Without the daemon's incidents nothing was checked: that is not a pass."""
    facts = DrillFacts(START, 10.0, 80.0, (), (), api_answered=False, rto_s=45.0)
    report = build_report(_scenario(expect=[], max_incidents=0), facts)
    assert report["passed"] is False
    assert "never answered" in report["violations"][0]


def test_the_cause_is_the_fault_that_names_the_incident() -> None:
    """With two faults before an incident, the one naming its target or zone is the cause."""
    events = (
        EventRecord(12.0, "zone-outage", "us-east-1c"),
        EventRecord(15.0, "fail-app", "app-1"),
    )
    zone = _incident(scope="zone", zone="us-east-1c", targets=("app-5", "app-6"))
    report = build_report(_scenario(expect=[]), _facts(zone, events=events))
    assert report["incidents"][0]["cause"] == {
        "do": "zone-outage",
        "target": "us-east-1c",
        "at_s": 12.0,
    }
    assert report["incidents"][0]["detection_s"] == 7.0


def test_incidents_parse_from_the_documented_api_shape() -> None:
    """The `*_ts` twins win over ISO text; targets are names; steps keep their times."""
    body = {
        "count": 1,
        "incidents": [
            {
                "id": "inc-20261126T140501-3f9a",
                "scope": "zone",
                "finding": "zone_outage",
                "role": "app_server",
                "region": "us-east-1",
                "zone": "us-east-1c",
                "targets": ["app-6", "app-5"],
                "opened_at": "2026-11-26T14:05:01.000Z",
                "opened_at_ts": 1795701901.0,
                "recovered_at": None,
                "recovered_at_ts": None,
                "closed_at": "2026-11-26T14:06:00.500Z",
                "playbook": "app_server.replace",
                "outcome": "failed",
                "steps": [
                    {"name": "launch", "status": "done", "started_at_ts": 1795701902.0,
                     "ended_at": "2026-11-26T14:05:03.000Z", "detail": "i-1"},
                ],
            }
        ],
    }  # fmt: skip
    (inc,) = parse_incidents(body)
    assert inc.targets == ("app-5", "app-6")
    assert inc.opened_at == 1795701901.0
    assert inc.recovered_at is None
    assert inc.ended_at == 1795701960.5
    assert inc.steps[0].started_at == 1795701902.0
    assert inc.steps[0].ended_at == 1795701903.0


def test_status_is_healthy_only_when_everything_is_up() -> None:
    """all_healthy and every layer health `up`; an empty status is not healthy."""
    up = {"all_healthy": True, "targets": [{"layers": {"agent": {"health": "up"}}}]}
    assert status_healthy(up)
    assert not status_healthy({**up, "all_healthy": False})
    assert not status_healthy(
        {"all_healthy": True, "canaries": [{"health": "unknown"}], "targets": []}
    )
    assert not status_healthy({"targets": []})


def _sighting(finding: str, targets: tuple[str, ...], at_s: float) -> Sighting:
    return Sighting(finding, targets, None, START + at_s, evidence=f"{finding} seen")


def _finding_report(sightings: tuple[Sighting, ...], **expect: Any) -> dict[str, Any]:
    sc = _scenario(
        event=[{"at": "5s", "do": "grow-disk", "target": "app-3", "rate": 20}],
        expect=[],
        expect_finding=[expect],
    )
    facts = DrillFacts(
        start=START,
        healthy_at_s=10.0,
        ended_at_s=80.0,
        events=(EventRecord(15.0, "grow-disk", "app-3", result="ok"),),
        incidents=(),
        api_answered=True,
        rto_s=45.0,
        sightings=sightings,
    )
    return build_report(sc, facts)


def test_a_finding_seen_in_time_from_its_cause_is_met() -> None:
    """Measured from the fault that names its target (at 15 s) to its first sighting."""
    seen = (_sighting("disk_full_soon", ("app-3",), 40.0),)
    report = _finding_report(seen, finding="disk_full_soon", targets=["app-3"], within="30s")
    (ex,) = report["expectations"]
    assert ex["met"] is True
    assert ex["reason"].startswith("seen 25.0s after the cause")
    assert report["findings"][0]["first_seen_s"] == 40.0
    assert report["passed"] is True


def test_a_finding_seen_too_late_or_on_another_target_is_not_met() -> None:
    late = (_sighting("disk_full_soon", ("app-3",), 60.0),)
    (ex,) = _finding_report(late, finding="disk_full_soon", within="30s")["expectations"]
    assert ex["met"] is False
    assert "within 30s" in ex["reason"]
    other = (_sighting("disk_full_soon", ("app-4",), 20.0),)
    report = _finding_report(other, finding="disk_full_soon", targets=["app-3"])
    assert report["expectations"][0]["met"] is False
    assert report["passed"] is False


def test_an_absent_finding_fails_when_it_shows() -> None:
    shown = (_sighting("capacity_disk", ("app-3",), 50.0),)
    (ex,) = _finding_report(shown, finding="capacity_disk", absent=True)["expectations"]
    assert ex["met"] is False
    assert ex["reason"] == "seen at 50.0s: capacity_disk seen"
    (ok,) = _finding_report((), finding="capacity_disk", absent=True)["expectations"]
    assert ok["met"] is True
