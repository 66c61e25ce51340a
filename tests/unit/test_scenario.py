"""Drill scenarios are validated whole before anything starts, naming every problem."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from drwatch.errors import ConfigError
from drwatch.sandbox.faults import VERBS
from drwatch.sandbox.scenario import Scenario, load_scenario, parse_scenario
from drwatch.sandbox.topology import default_topology, parse_topology

DRILLS = Path(__file__).resolve().parents[2] / "config" / "drills"
TOPO = default_topology()


def _base(**extra: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "duration": "60s",
        "event": [{"at": "5s", "do": "stop-instance", "target": "app-3"}],
        **extra,
    }


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(data, TOPO)
    return info.value.problems


def test_a_good_scenario_parses_with_its_timeline_in_order() -> None:
    """Events come back sorted by time, durations in seconds."""
    data = _base()
    data["event"].insert(0, {"at": "20s", "do": "heal", "target": "app-3"})
    sc = parse_scenario(data, TOPO)
    assert sc.duration == 60.0
    assert [(e.at, e.do) for e in sc.timeline()] == [(5.0, "stop-instance"), (20.0, "heal")]


def test_unknown_verb_is_named() -> None:
    """An unknown verb is reported with its event's place."""
    data = _base(event=[{"at": "5s", "do": "explode-instance", "target": "app-3"}])
    assert _problems(data) == ["event[0].do: unknown verb 'explode-instance'"]


def test_unknown_target_is_named() -> None:
    """A target that is not in the topology is reported, with what the verb needs."""
    data = _base(event=[{"at": "5s", "do": "stop-instance", "target": "app-99"}])
    (problem,) = _problems(data)
    assert problem.startswith("event[0].target: unknown target 'app-99'")


def test_target_of_the_wrong_kind_is_refused() -> None:
    """A zone verb aimed at an instance says what it needs."""
    data = _base(event=[{"at": "5s", "do": "zone-outage", "target": "app-3"}])
    (problem,) = _problems(data)
    assert "zone-outage needs a zone" in problem


@pytest.mark.parametrize("at", ["-5s", -5])
def test_negative_time_is_refused(at: object) -> None:
    """A negative event time is a problem of that event's `at`."""
    (problem,) = _problems(_base(event=[{"at": at, "do": "fail-app", "target": "app-1"}]))
    assert problem.startswith("event[0].at:")
    assert "negative" in problem


def test_absent_time_is_refused() -> None:
    """An event without `at` is reported as a missing field."""
    (problem,) = _problems(_base(event=[{"do": "fail-app", "target": "app-1"}]))
    assert problem == "event[0].at: required field is missing"


@pytest.mark.parametrize("missing", ["name", "duration"])
def test_missing_top_level_field_is_named(missing: str) -> None:
    """name and duration are required."""
    data = _base()
    del data[missing]
    assert _problems(data) == [f"{missing}: required field is missing"]


def test_bad_duration_is_named() -> None:
    """A duration that is not a duration says how to write one."""
    (problem,) = _problems(_base(duration="a minute"))
    assert problem.startswith("duration:")
    assert "not a duration" in problem


def test_event_after_the_end_is_refused() -> None:
    """An event after `duration` would never run."""
    data = _base(event=[{"at": "90s", "do": "fail-app", "target": "app-1"}])
    assert _problems(data) == ["event[0].at: 90s is after the end (duration 60s)"]


def test_bad_parameter_is_named() -> None:
    """fill-disk's percent must be 0-100."""
    data = _base(event=[{"at": "1s", "do": "fill-disk", "target": "db-1", "percent": 140}])
    (problem,) = _problems(data)
    assert problem.startswith("event[0]: percent must be")


def test_unknown_keys_and_bad_expectations_are_all_reported() -> None:
    """Every problem at once: a typo'd key, a bad scope, an unknown expected target."""
    data = _base(
        max_incident=1,
        expect=[{"scope": "galaxy"}, {"scope": "instance", "targets": ["app-42"]}],
    )
    problems = _problems(data)
    assert "max_incident: unknown field" in problems
    assert any(p.startswith("expect[0].scope:") for p in problems)


def test_expected_unknown_instance_is_named() -> None:
    """An expectation naming an instance the topology lacks is refused."""
    data = _base(expect=[{"scope": "instance", "targets": ["app-42"]}])
    assert _problems(data) == ["expect[0].targets: unknown instance 'app-42'"]


def test_another_topology_changes_what_targets_exist() -> None:
    """Targets are checked against the topology the drill will run."""
    topo = parse_topology(
        {
            "region": [{"name": "us-west-2", "zones": ["us-west-2a"]}],
            "instance": [
                {"name": "web-1", "role": "app_server", "group": "web", "zone": "us-west-2a"}
            ],
        }
    )
    sc = parse_scenario(_base(event=[{"at": "1s", "do": "fail-app", "target": "web-1"}]), topo)
    assert sc.event[0].target == "web-1"
    with pytest.raises(ConfigError):
        parse_scenario(_base(), topo)  # app-3 is not in that topology


def _shipped() -> list[Path]:
    return sorted(DRILLS.glob("*.toml"))


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    """Every scenario in config/drills validates against the default topology."""
    assert isinstance(load_scenario(path, TOPO), Scenario)


def test_every_fault_verb_has_a_shipped_scenario() -> None:
    """At least one shipped drill per fault verb, and a healthy baseline."""
    used = set()
    for path in _shipped():
        used |= {e["do"] for e in tomllib.loads(path.read_text()).get("event", [])}
    assert set(VERBS) <= used
    healthy = tomllib.loads((DRILLS / "healthy.toml").read_text())
    assert healthy["max_incidents"] == 0
    assert "event" not in healthy


def test_drill_command_exits_2_and_starts_nothing_on_a_bad_scenario(tmp_path: Path) -> None:
    """`drwatch drill` with a bad scenario exits 2, names the problem, writes no report."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\nduration = "10s"\n[[event]]\nat = "1s"\ndo = "nuke"\ntarget = "app-1"\n'
    )
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drwatch.cli",
            "drill",
            str(bad),
            "--sandbox",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown verb 'nuke'" in proc.stderr
    assert not report.exists()


def test_topology_problems_are_all_listed() -> None:
    """A topology with a duplicate name, a stray zone and a dangling reference lists all three."""
    with pytest.raises(ConfigError) as info:
        parse_topology(
            {
                "region": [{"name": "us-east-1", "zones": ["us-east-1a"]}],
                "instance": [
                    {"name": "a", "role": "app_server", "group": "g", "zone": "us-east-1a",
                     "database": "nope"},
                    {"name": "a", "role": "app_server", "group": "g", "zone": "us-east-1z"},
                ],
            }
        )  # fmt: skip
    text = " ".join(info.value.problems)
    assert "'a' is used twice" in text
    assert "us-east-1z" in text
    assert "unknown instance 'nope'" in text


def test_grow_disk_takes_a_rate_in_percent_per_minute() -> None:
    """`rate` must be above 0 and at most 100 percent per minute."""
    good = {"at": "1s", "do": "grow-disk", "target": "app-3", "rate": 20}
    assert parse_scenario(_base(event=[good]), TOPO).event[0].rate == 20
    for rate in (0, 101, "fast"):
        (problem,) = _problems(_base(event=[{**good, "rate": rate}]))
        assert problem.startswith("event[0]: rate must be percent per minute"), problem


def test_expect_finding_is_checked_whole() -> None:
    """Unknown instances, targets with a data class, and within with absent are all named."""
    problems = _problems(
        _base(
            expect_finding=[
                {"finding": "disk_full_soon", "targets": ["app-99"]},
                {"finding": "x", "targets": ["app-1"], "data_class": "orders"},
                {"finding": "capacity_disk", "absent": True, "within": "5s"},
            ]
        )
    )
    assert problems == [
        "expect_finding[0].targets: unknown instance 'app-99'",
        "expect_finding[1]: give targets or data_class, not both",
        "expect_finding[2]: within has no meaning with absent = true",
    ]


def test_expect_finding_needs_its_finding() -> None:
    (problem,) = _problems(_base(expect_finding=[{"targets": ["app-1"]}]))
    assert problem == "expect_finding[0].finding: required field is missing"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"duration": float("nan")}, "duration"),
        ({"duration": "999999999999999999999d"}, "duration"),
        ({"duration": "2d"}, "duration"),
        ({"max_incidents": 10**30}, "max_incidents"),
        ({"objectives": {"rto": float("inf")}}, "objectives.rto"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(change: dict[str, Any], where: str) -> None:
    """Every time and count in a scenario is finite and in a sane range, named by path."""
    problems = _problems(_base(**change))
    assert any(p.startswith(f"{where}: ") for p in problems), problems


@pytest.mark.parametrize(
    ("event", "where"),
    [
        ({"at": float("nan")}, "event[0].at"),
        ({"do": "slow-app", "delay": float("nan")}, "event[0]"),
        ({"do": "fill-disk", "percent": float("nan")}, "event[0]"),
        ({"do": "flap-app", "period": "99999999999999999999999d"}, "event[0]"),
    ],
)
def test_non_finite_event_values_are_refused(event: dict[str, Any], where: str) -> None:
    """nan in an event's time or parameter is named, never passed to the fault injector."""
    data = _base()
    data["event"][0] = {**data["event"][0], **event}
    problems = _problems(data)
    assert any(p.startswith(where) for p in problems), problems


def test_drill_command_exits_2_on_a_non_utf8_scenario(tmp_path: Path) -> None:
    """A scenario that is not UTF-8: exit 2, the line and byte named, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "caf\xe9"\nduration = "10s"\n')
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drwatch.cli",
            "drill",
            str(bad),
            "--sandbox",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not UTF-8: byte 0xe9 at line 1, column 12" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not report.exists()


@pytest.mark.parametrize("verb", ["kill-leader", "etcd-outage"])
def test_a_cluster_verb_needs_several_watchers(verb: str) -> None:
    """kill-leader and etcd-outage mean nothing to one watcher: the scenario says so;
    with `watchers = 3` the same event parses."""
    event = [{"at": "5s", "do": verb, "target": "watcher"}]
    assert _problems(_base(event=event)) == [
        f"event[0].do: {verb} needs several watchers (watchers = 3)"
    ]
    assert parse_scenario(_base(event=event, watchers=3), TOPO).watchers == 3


def test_cut_vantage_names_a_watcher_and_a_zone() -> None:
    """`WATCHER/ZONE` (or `leader/ZONE`) with a zone of the topology; anything else is
    refused with what the verb needs."""
    for target in ("drwatch-2/us-east-1b", "leader/us-east-1a"):
        event = [{"at": "5s", "do": "cut-vantage", "target": target}]
        assert parse_scenario(_base(event=event, watchers=3), TOPO).event[0].target == target
    event = [{"at": "5s", "do": "cut-vantage", "target": "drwatch-2/nowhere"}]
    (problem,) = _problems(_base(event=event, watchers=3))
    assert problem.startswith("event[0].target: unknown target 'drwatch-2/nowhere'")


def test_cut_etcd_names_one_watcher_or_the_leader() -> None:
    """cut-etcd takes `drwatch-N` or `leader`, with several watchers."""
    for target in ("drwatch-3", "leader"):
        event = [{"at": "5s", "do": "cut-etcd", "target": target}]
        assert parse_scenario(_base(event=event, watchers=3), TOPO).event[0].do == "cut-etcd"
    event = [{"at": "5s", "do": "cut-etcd", "target": "app-3"}]
    (problem,) = _problems(_base(event=event, watchers=3))
    assert "cut-etcd needs a watcher name" in problem


def test_after_step_names_an_instance_of_the_topology() -> None:
    """`after_step` holds an event until a run for that instance is under way: it must
    name an instance (kill-leader mid-playbook, config/drills/kill-leader.toml)."""
    event = [{"at": "6s", "do": "kill-leader", "target": "watcher", "after_step": "app-3"}]
    sc = parse_scenario(_base(event=event, watchers=3), TOPO)
    assert sc.event[0].after_step == "app-3"
    event[0]["after_step"] = "app-99"
    assert _problems(_base(event=event, watchers=3)) == [
        "event[0].after_step: unknown instance 'app-99'"
    ]
