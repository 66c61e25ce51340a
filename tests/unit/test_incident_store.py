"""The incident store: records survive a reopen, lists are newest first, controls persist."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from drwatch.incidents import IncidentStore, new_incident_id
from drwatch.model import PlaybookName, Scope, StepRecord, StepStatus
from drwatch.model.findings import Finding, Severity
from drwatch.model.incident import GateEntry, Incident, IncidentOutcome, Phase

T = 1_795_701_600.0


def make(n: int, **kw: object) -> Incident:
    base: dict[str, object] = dict(
        id=f"inc-{n}",
        scope=Scope.INSTANCE,
        scope_key=f"instance:i-{n}",
        finding=Finding.INSTANCE_STOPPED,
        severity=Severity.OUTAGE,
        region="us-east-1",
        zone="us-east-1b",
        roles=("app_server",),
        groups=("app",),
        target_ids=(f"i-{n}",),
        target_names=(f"app-{n}",),
        opened_at=T + n,
        updated_at=T + n,
    )
    base.update(kw)
    return Incident(**base)  # type: ignore[arg-type]


def test_incident_survives_reopen_with_every_field(tmp_path: Path) -> None:
    """A saved incident, with steps and gate history, reads back whole after a reopen."""
    inc = make(
        1,
        phase=Phase.ACTING,
        playbook=PlaybookName.APP_REPLACE,
        acted_at=T + 5,
        gate_history=(GateEntry(T + 2, ("warm-up: 3 s left",)),),
        steps=(StepRecord("launch", StepStatus.DONE, T + 5, T + 9, "i-new"),),
    )
    store = IncidentStore(tmp_path)
    store.save(inc)
    store.close()
    again = IncidentStore(tmp_path)
    assert again.get("inc-1") == inc
    assert again.open_incidents() == [inc]


def test_recent_is_newest_first_and_open_filter(tmp_path: Path) -> None:
    """Lists come newest first; open_only leaves out closed incidents."""
    store = IncidentStore(tmp_path)
    store.save(make(1, closed_at=T + 50, final=IncidentOutcome.CLEARED, phase=Phase.ENDED))
    store.save(make(2))
    store.save(make(3))
    assert [i.id for i in store.recent()] == ["inc-3", "inc-2", "inc-1"]
    assert [i.id for i in store.recent(open_only=True)] == ["inc-3", "inc-2"]


def test_acted_since_finds_actions_in_the_window(tmp_path: Path) -> None:
    """Only incidents whose playbooks started within the window are returned."""
    store = IncidentStore(tmp_path)
    store.save(make(1, acted_at=T - 4000))
    store.save(make(2, acted_at=T - 10))
    store.save(make(3))
    assert [i.id for i in store.acted_since(T - 600)] == ["inc-2"]


def test_retired_and_controls_persist(tmp_path: Path) -> None:
    """Retired instances and the pause control survive a reopen."""
    store = IncidentStore(tmp_path)
    store.retire(["i-1", "i-2"], "inc-1", T)
    store.set_control("paused", "1")
    store.close()
    again = IncidentStore(tmp_path)
    assert again.retired() == frozenset({"i-1", "i-2"})
    assert again.get_control("paused") == "1"


def test_store_uses_wal(tmp_path: Path) -> None:
    """The database runs in WAL mode (readers never block the tick's writes)."""
    store = IncidentStore(tmp_path)
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_incident_ids_are_unique_and_sortable() -> None:
    """Ids carry the UTC time and a random tail."""
    a, b = new_incident_id(T), new_incident_id(T)
    assert a != b
    assert a.startswith("inc-20261126T140000-")


def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    """A tick that fails halfway rolls its writes back; a checkpoint keeps what came before."""
    store = IncidentStore(tmp_path)

    def failing_tick() -> None:
        with store.batch():
            store.save(make(1))
            store.checkpoint()
            store.save(make(2))
            raise RuntimeError("tick failed")

    with pytest.raises(RuntimeError):
        failing_tick()
    assert [i.id for i in store.recent()] == ["inc-1"]


def test_the_record_is_generated_from_every_field() -> None:
    """Every field, set to something other than its default, survives to_dict/from_dict,
    and the record has one key per field (none written by hand, none forgotten)."""
    step = StepRecord("launch", StepStatus.FAILED, T + 5, T + 9, "refused")
    inc = make(
        2,
        evidence="app-2: provider says stopped",
        finding=Finding.INSTANCE_STOPPED,
        opened_finding=Finding.INSTANCE_UNREACHABLE,
        opened_evidence="app-2: running, agent and app down",
        phase=Phase.ENDED,
        final=IncidentOutcome.FAILED,
        closed_at=T + 30,
        playbook=PlaybookName.APP_REPLACE,
        playbooks=(PlaybookName.APP_REPLACE, PlaybookName.LB_FAILOVER_EIP),
        acted_at=T + 5,
        recovered_at=T + 20,
        approved_at=T + 4,
        gate_reasons=("cooldown until 14:05Z",),
        gate_history=(GateEntry(T + 2, ("paused", "warm-up: 3 s left")),),
        steps=(step,),
        detail="launch refused",
        current_group="app",
        current_targets=("i-2",),
        submitted_at=T + 5,
        run_ids_done=("r1",),
        groups_done=("web-lb",),
        steps_done=(step,),
    )
    unset = [f.name for f in fields(Incident) if getattr(inc, f.name) == f.default]
    assert unset == []
    record = json.loads(json.dumps(inc.to_dict()))
    assert set(record) == {f.name for f in fields(Incident)}
    assert record["steps"][0]["status"] == "failed"
    assert Incident.from_dict(record) == inc


def test_a_record_from_before_the_opening_finding_was_kept_still_loads() -> None:
    """An older record without the newer fields loads with their defaults; what opened
    it is taken to be the finding it holds."""
    record = make(3).to_dict()
    for newer in ("opened_finding", "opened_evidence", "steps_done", "gate_history"):
        del record[newer]
    old = Incident.from_dict(record)
    assert (old.opened_finding, old.steps_done, old.gate_history) == ("instance_stopped", (), ())


@pytest.mark.parametrize(
    ("state", "outcome", "run_ended_at", "phase", "final"),
    [
        ("open", None, None, Phase.DETECTED, None),
        ("open", "blocked", None, Phase.BLOCKED, None),
        ("open", "awaiting_approval", None, Phase.AWAITING_APPROVAL, None),
        ("open", "detected_only", None, Phase.DETECTED_ONLY, None),
        ("open", "failed", T + 9, Phase.FAILED, None),
        ("open", "recovered", T + 9, Phase.SETTLED, None),
        ("acting", None, None, Phase.ACTING, None),
        ("acting", "blocked", None, Phase.HELD, None),
        ("acting", None, T + 9, Phase.VERIFYING, None),
        ("ended", "cleared", None, Phase.ENDED, IncidentOutcome.CLEARED),
        ("ended", "recovered", T + 9, Phase.ENDED, IncidentOutcome.RECOVERED),
    ],
)
def test_a_record_from_before_phase_gets_its_phase(
    state: str, outcome: str | None, run_ended_at: float | None, phase: Phase, final: object
) -> None:
    """Records written before `phase` (state, outcome, run_ended_at) load in the phase
    they meant, with the same state and outcome as before."""
    record = make(4).to_dict()
    del record["phase"], record["final"]
    record.update(state=state, outcome=outcome, run_ended_at=run_ended_at)
    old = Incident.from_dict(record)
    assert (old.phase, old.final) == (phase, final)
    assert (old.state.value, old.outcome.value if old.outcome else None) == (state, outcome)


def test_a_record_this_version_cannot_read_is_left_out_and_logged(tmp_path: Path) -> None:
    """A record with a finding this version does not know (a newer drwatch wrote it) does
    not stop the others from loading: it is logged and left in the store as it is."""
    store = IncidentStore(tmp_path)
    store.save(make(1))
    future = make(2).to_dict()
    future["finding"] = "region_on_fire"
    store._db.execute(
        "INSERT INTO incidents (id, scope_key, opened_at, body) VALUES (?, ?, ?, ?)",
        ("inc-2", "instance:i-2", T + 2, json.dumps(future)),
    )
    with capture_logs() as logs:
        assert [i.id for i in store.open_incidents()] == ["inc-1"]
    assert [e["event"] for e in logs] == ["incident.unreadable"]
    assert store._db.execute("SELECT count(*) FROM incidents").fetchone()[0] == 2
