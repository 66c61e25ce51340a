"""The drill ledger: what a drill report becomes, what the ledger keeps, when drills are due."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drwatch.ledger import DrillLedger, DrillRecord, drill_status, record_report

DAY = 86400.0


def report(passed: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": "app server crash",
        "passed": passed,
        "started_at": 1_000_000.0,
        "ended_at_s": 95.5,
        "objectives": {"rto_s": 120.0, "rpo_s": None},
        "incidents": [
            {"id": "inc-1", "detection_s": 4.2, "recovery_s": 31.0},
            {"id": "inc-2", "detection_s": 6.0, "recovery_s": None},
        ],
        "violations": [] if passed else ["incident inc-1 recovered in 131.0s > RTO 120s"],
        **extra,
    }


def test_a_record_keeps_the_worst_measurements_and_the_objectives() -> None:
    """Detection and recovery are the worst of the drill's incidents; the objectives in
    force travel with the record; data loss comes from the report's `data` part."""
    rec = DrillRecord.from_report(
        report(data={"loss_window_s": 0.4}), kind="sandbox", started_at=1_000_000.0
    )
    assert (rec.detection_s, rec.recovery_s, rec.data_loss_s) == (6.0, 31.0, 0.4)
    assert (rec.rto_s, rec.rpo_s) == (120.0, None)
    assert rec.ended_at == pytest.approx(1_000_095.5)
    assert rec.result == "passed"


def test_a_report_without_incidents_measures_nothing() -> None:
    rec = DrillRecord.from_report(
        {"scenario": "healthy", "passed": True}, kind="sandbox", started_at=5.0
    )
    assert (rec.detection_s, rec.recovery_s, rec.data_loss_s) == (None, None, None)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown drill kind"):
        DrillRecord.from_report(report(), kind="chaos-monkey", started_at=1.0)


def test_the_ledger_keeps_drills_across_reopening(tmp_path: Path) -> None:
    """Recorded drills survive closing the ledger; newest first; the newest per kind and
    result is what the overdue alert reads."""
    record_report(tmp_path, report(passed=True, started_at=100.0), "sandbox", by="ana")
    record_report(tmp_path, report(passed=False, started_at=200.0), "sandbox")
    record_report(tmp_path, report(passed=True, started_at=150.0), "live")
    with DrillLedger(tmp_path) as ledger:
        recent = ledger.recent()
        latest = ledger.latest()
    assert [(r.kind, r.started_at) for r in recent] == [
        ("sandbox", 200.0),
        ("live", 150.0),
        ("sandbox", 100.0),
    ]
    assert recent[-1].by == "ana"
    assert recent[0].violations == ("incident inc-1 recovered in 131.0s > RTO 120s",)
    assert latest == {("sandbox", "passed"): 100.0, ("sandbox", "failed"): 200.0,
                      ("live", "passed"): 150.0}  # fmt: skip


def test_a_record_round_trips_through_its_dict_and_the_api_form() -> None:
    rec = DrillRecord.from_report(report(), kind="live", started_at=10.0, by="x")
    assert DrillRecord.from_dict(rec.to_dict()) == rec
    api_form = {**rec.to_dict(), "started_at": "1970-01-01T00:00:10Z", "started_at_ts": 10.0}
    api_form["ended_at"], api_form["ended_at_ts"] = "iso", rec.ended_at
    assert DrillRecord.from_dict(api_form) == rec


@pytest.mark.parametrize(
    ("latest", "now", "overdue", "due_at"),
    [
        ({}, 1000 * DAY, True, None),  # never passed: overdue at once
        ({("sandbox", "passed"): 100 * DAY}, 281 * DAY, False, 282 * DAY),
        ({("sandbox", "passed"): 100 * DAY}, 283 * DAY, True, 282 * DAY),
        # A failed drill proves nothing: only passing ones count.
        ({("sandbox", "failed"): 280 * DAY}, 281 * DAY, True, None),
    ],
)
def test_a_drill_is_due_an_interval_after_the_last_passing_one(
    latest: dict[tuple[str, str], float], now: float, overdue: bool, due_at: float | None
) -> None:
    (due,) = drill_status(latest, ["sandbox"], 182 * DAY, now)
    assert (due.overdue, due.due_at) == (overdue, due_at)
    assert ("overdue" in due.describe(now)) is overdue
