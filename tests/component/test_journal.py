"""The journal: durable, committed rows that a second process can read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from drwatch.act.journal import Journal
from drwatch.model.plan import Plan, PlaybookName

PLAN = Plan(
    incident_id="inc-1",
    playbook=PlaybookName.APP_REPLACE,
    region="us-east-1",
    zone="us-east-1b",
    group="app",
    targets=("i-1", "i-2"),
    avoid_zones=("us-east-1c",),
    reason="app-3 down",
)


def test_journal_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The journal lives in the state dir and uses WAL (readers never block the writer)."""
    journal = Journal.in_state_dir(tmp_path / "state")
    journal.close()
    db = sqlite3.connect(tmp_path / "state" / Journal.FILE_NAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_intent_is_visible_to_another_process_before_the_effect(tmp_path: Path) -> None:
    """Once effect_intent returns, the row (with its params and owner) is committed: a
    second connection, as a restarted daemon would open, reads it."""
    path = tmp_path / "j.db"
    writer = Journal(path)
    writer.start_run("r1", PLAN, "watcher-a", now=10.0)
    writer.effect_intent(
        "r1", "launch", "i-1", params={"zone": "us-east-1b"}, owner="watcher-a", now=11.0
    )
    reader = Journal(path)
    try:
        row = reader.effect("r1", "launch", "i-1")
        assert row is not None
        assert (row.status, row.params, row.owner, row.result) == (
            "intent",
            {"zone": "us-east-1b"},
            "watcher-a",
            None,
        )
        writer.effect_done(
            "r1", "launch", "i-1", result={"instance_id": "i-9"}, owner="watcher-a", now=12.0
        )
        done = reader.effect("r1", "launch", "i-1")
        assert done is not None
        assert (done.status, done.result) == ("done", {"instance_id": "i-9"})
    finally:
        writer.close()
        reader.close()


def test_plan_round_trips_and_unfinished_lists_running_runs(tmp_path: Path) -> None:
    """A run's plan comes back equal; only runs not yet finished are unfinished."""
    journal = Journal(tmp_path / "j.db")
    try:
        journal.start_run("r1", PLAN, "w", now=1.0)
        journal.start_run("r2", PLAN, "w", now=2.0)
        journal.finish_run("r2", "succeeded", "done", now=3.0)
        (open_run,) = journal.unfinished()
        assert open_run.run_id == "r1"
        assert open_run.plan == PLAN
        assert [r.run_id for r in journal.recent()] == ["r1", "r2"]
    finally:
        journal.close()


def test_steps_keep_their_order_first_start_and_last_writer(tmp_path: Path) -> None:
    """Re-entering a step after a crash keeps its first start time and order, and the rows
    name the runner that wrote them last."""
    journal = Journal(tmp_path / "j.db")
    try:
        journal.start_run("r1", PLAN, "w1", now=1.0)
        journal.step_intent("r1", "launch", "w1", now=2.0)
        journal.step_end("r1", "launch", "done", detail="ok", result={"a": 1}, owner="w1", now=3.0)
        journal.step_intent("r1", "register", "w1", now=4.0)
        journal.take_over("r1", "w2", now=5.0)
        journal.step_intent("r1", "register", "w2", now=6.0)
        steps = journal.steps("r1")
        assert [(s.name, s.status, s.owner, s.started_at) for s in steps] == [
            ("launch", "done", "w1", 2.0),
            ("register", "intent", "w2", 4.0),
        ]
        assert steps[0].result == {"a": 1}
        run = journal.run("r1")
        assert run is not None
        assert run.owner == "w2"
    finally:
        journal.close()
