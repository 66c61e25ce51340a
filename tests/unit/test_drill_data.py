"""The drill report's `data` block (postgres = true): rows written, rows lost, the loss
window measured against the RPO objective."""

from __future__ import annotations

from drwatch.sandbox.pgworld import DataFacts
from drwatch.sandbox.scenario import parse_scenario
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.verdict import DrillFacts, build_report, data_block, data_violations

START = 1_800_000_000.0


def _rows(first_s: float, last_s: float) -> dict[int, float]:
    """One acknowledged row every 100 ms from `first_s` to `last_s` (drill seconds)."""
    count = round((last_s - first_s) * 10) + 1
    return {n + 1: START + first_s + n * 0.1 for n in range(count)}


def test_nothing_lost_is_a_zero_window() -> None:
    """Every row acknowledged before the fault survives: lost 0, window 0."""
    acked = _rows(10.0, 30.0)
    data = DataFacts(250, acked, frozenset(acked), fault_at=START + 20.0)
    block = data_block(data, START)
    assert block["rows_written"] == len(acked)
    assert block["rows_attempted"] == 250
    assert block["rows_lost"] == 0
    assert block["loss_window_s"] == 0.0
    assert block["fault_at_s"] == 20.0


def test_rows_after_the_newest_survivor_are_lost_and_the_window_measures_them() -> None:
    """A restore from a copy taken at 12 s, fault at 20 s: the rows from 12.1 s to 19.9 s
    are lost, the window is 8 s; rows acknowledged after the fault are not counted."""
    acked = _rows(10.0, 30.0)
    kept = frozenset(s for s, t in acked.items() if t <= START + 12.0 or t > START + 25.0)
    block = data_block(DataFacts(201, acked, kept, fault_at=START + 20.0), START)
    assert block["rows_lost"] == 79  # 12.1 .. 19.9 s
    assert block["loss_window_s"] == 8.0
    assert block["newest_surviving_at_s"] == 12.0


def test_a_database_that_does_not_answer_at_the_end_is_a_violation() -> None:
    data = DataFacts(10, _rows(1.0, 1.9), None, fault_at=None, error="not running")
    block = data_block(data, START)
    assert block["rows_lost"] is None
    (problem,) = data_violations(block, rpo_s=5.0)
    assert "not running" in problem


def test_a_window_beyond_the_rpo_objective_fails_the_drill() -> None:
    """The report carries the block, and a loss window over the scenario's RPO fails it."""
    scenario = parse_scenario(
        {"name": "pg", "duration": "60s", "postgres": True, "objectives": {"rpo": "2s"}},
        default_topology(),
    )
    acked = _rows(10.0, 30.0)
    kept = frozenset(s for s, t in acked.items() if t <= START + 15.0)
    facts = DrillFacts(
        start=START,
        healthy_at_s=5.0,
        ended_at_s=60.0,
        events=(),
        incidents=(),
        api_answered=True,
        rto_s=45.0,
        rpo_s=scenario.objectives.rpo,
        data=DataFacts(201, acked, kept, fault_at=START + 20.0),
    )
    report = build_report(scenario, facts)
    assert report["data"]["loss_window_s"] == 5.0
    assert report["passed"] is False
    assert any("RPO 2s" in v for v in report["violations"])


def test_without_postgres_the_report_has_no_data_block() -> None:
    scenario = parse_scenario({"name": "sim", "duration": "10s"}, default_topology())
    facts = DrillFacts(START, 1.0, 10.0, (), (), True, 45.0)
    assert "data" not in build_report(scenario, facts)
