"""A drill's verdict, pure: events + incidents + the scenario -> the report (DESIGN.md).

Times in the report are seconds from the drill's start; `detection_s` and `recovery_s`
are measured from the fault that caused the incident (`cause` in the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drwatch.sandbox.backup_verdict import BackupSighting, judge_backup, reference_s
from drwatch.sandbox.daemon_api import Incident
from drwatch.sandbox.faults import HEAL
from drwatch.sandbox.pgworld import DataFacts
from drwatch.sandbox.scenario import Expect, ExpectFinding, Scenario


@dataclass(frozen=True)
class EventRecord:
    """One timeline event as it was applied: `at_s` from the drill's start."""

    at_s: float
    do: str
    target: str
    result: str = ""
    error: str = ""


@dataclass(frozen=True)
class Sighting:
    """A finding as the drill first saw it in the daemon's status (`first_seen` epoch)."""

    finding: str
    targets: tuple[str, ...]
    data_class: str | None
    first_seen: float
    evidence: str = ""
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DrillFacts:
    """What the drill runner saw. `start` is the drill's start (epoch seconds)."""

    start: float
    healthy_at_s: float | None
    ended_at_s: float
    events: tuple[EventRecord, ...]
    incidents: tuple[Incident, ...]
    api_answered: bool
    rto_s: float
    rpo_s: float | None = None
    sightings: tuple[Sighting, ...] = ()
    data: DataFacts | None = None  # with `postgres = true`: the writer's rows
    backups: tuple[BackupSighting, ...] = ()  # the catalogue as the drill saw it


def _rel(t: float | None, start: float) -> float | None:
    return None if t is None else round(t - start, 3)


def cause_of(inc: Incident, events: tuple[EventRecord, ...], start: float) -> EventRecord | None:
    """The latest fault before the incident opened that names what the incident is about."""
    opened = inc.opened_at - start
    faults = [e for e in events if e.do != HEAL and not e.error and e.at_s <= opened + 0.5]
    related = {*inc.targets, inc.zone, inc.region}
    named = [e for e in faults if e.target in related]
    if not named and inc.role == "database":
        named = [e for e in faults if e.do in ("corrupt-volume", "corrupt-snapshot")]
    pool = named or faults
    return pool[-1] if pool else None


# Verdicts an incident holds from when it is opened, however long it stays open.
_VERDICTS_AT_OPEN = frozenset({"detected_only", "awaiting_approval", "blocked"})


def _done_at(inc: Incident) -> float:
    """When the incident reached its outcome."""
    if inc.outcome == "recovered" and inc.recovered_at is not None:
        return inc.recovered_at
    if inc.outcome in _VERDICTS_AT_OPEN or inc.ended_at is None:
        return inc.opened_at
    return inc.ended_at


def incident_report(inc: Incident, facts: DrillFacts) -> dict[str, Any]:
    cause = cause_of(inc, facts.events, facts.start)
    opened_s = _rel(inc.opened_at, facts.start) or 0.0
    recovered_s = _rel(inc.recovered_at, facts.start)
    return {
        "id": inc.id,
        "scope": inc.scope,
        "role": inc.role,
        "region": inc.region,
        "zone": inc.zone,
        "targets": list(inc.targets),
        "finding": inc.finding,
        "opened_finding": inc.opened_finding or inc.finding,
        "outcomes_seen": list(inc.outcomes_seen),
        "opened_at_s": opened_s,
        "detection_s": round(opened_s - cause.at_s, 3) if cause else None,
        "playbook": inc.playbook,
        "outcome": inc.outcome,
        "recovered_at_s": recovered_s,
        "recovery_s": round(recovered_s - cause.at_s, 3) if cause and recovered_s else None,
        "cause": {"do": cause.do, "target": cause.target, "at_s": cause.at_s} if cause else None,
        "steps": [
            {
                "name": s.name,
                "status": s.status,
                "started_at_s": _rel(s.started_at, facts.start),
                "ended_at_s": _rel(s.ended_at, facts.start),
                "detail": s.detail,
            }
            for s in inc.steps
        ],
    }


def _identity_matches(ex: Expect, inc: Incident) -> bool:
    return (
        inc.scope == ex.scope
        and (ex.role is None or inc.role == ex.role)
        and (ex.targets is None or set(inc.targets) == set(ex.targets))
        and (ex.playbook is None or inc.playbook == ex.playbook)
    )


def _outcome_problem(ex: Expect, inc: Incident) -> str:
    """What is wrong with the incident's outcome, now or on its way; "" when nothing."""
    if ex.outcome is not None and inc.outcome != ex.outcome:
        return f"outcome {inc.outcome}, expected {ex.outcome}"
    missing = [o for o in ex.seen or () if o not in inc.outcomes_seen]
    if missing:
        return f"never {', '.join(missing)} (seen: {', '.join(inc.outcomes_seen) or 'none'})"
    return ""


def judge(ex: Expect, facts: DrillFacts) -> dict[str, Any]:
    """Does exactly one incident match, with the expected outcome, in time?"""
    found = [i for i in facts.incidents if _identity_matches(ex, i)]
    out: dict[str, Any] = {"expect": ex.model_dump(exclude_none=True), "incident": None}
    if len(found) != 1:
        seen = ", ".join(f"{i.scope}{list(i.targets)}" for i in facts.incidents) or "none"
        return {**out, "met": False, "reason": f"{len(found)} incidents match (seen: {seen})"}
    inc = found[0]
    out["incident"] = inc.id
    problem = _outcome_problem(ex, inc)
    if problem:
        return {**out, "met": False, "reason": problem}
    cause = cause_of(inc, facts.events, facts.start)
    if ex.within is not None:
        if cause is None:
            return {**out, "met": False, "reason": "no fault found that caused it"}
        took = _done_at(inc) - facts.start - cause.at_s
        if took > ex.within:
            return {**out, "met": False, "reason": f"took {took:.1f}s, within {ex.within:g}s"}
        return {**out, "met": True, "reason": f"{inc.outcome} after {took:.1f}s"}
    return {**out, "met": True, "reason": f"incident {inc.id}: {inc.outcome}"}


def _sighting_matches(ef: ExpectFinding, s: Sighting) -> bool:
    return (
        s.finding == ef.finding
        and (ef.targets is None or set(s.targets) == set(ef.targets))
        and (ef.data_class is None or s.data_class == ef.data_class)
        and (ef.location is None or dict(s.facts).get("location") == ef.location)
    )


def _finding_cause(ef: ExpectFinding, s: Sighting, facts: DrillFacts) -> EventRecord | None:
    """The latest fault before the sighting, preferring one that names its targets."""
    seen = s.first_seen - facts.start
    faults = [e for e in facts.events if e.do != HEAL and not e.error and e.at_s <= seen + 0.5]
    named = [e for e in faults if e.target in s.targets or e.target == s.data_class]
    pool = named or faults
    return pool[-1] if pool else None


def judge_finding(ef: ExpectFinding, facts: DrillFacts) -> dict[str, Any]:
    """Did the finding appear (in time from its cause), or, with `absent`, never?"""
    found = sorted(
        (s for s in facts.sightings if _sighting_matches(ef, s)), key=lambda s: s.first_seen
    )
    out: dict[str, Any] = {"expect_finding": ef.model_dump(exclude_none=True)}
    if ef.absent:
        if found:
            at = found[0].first_seen - facts.start
            return {**out, "met": False, "reason": f"seen at {at:.1f}s: {found[0].evidence}"}
        return {**out, "met": True, "reason": "never seen"}
    if not found:
        seen = ", ".join(sorted({s.finding for s in facts.sightings})) or "none"
        return {**out, "met": False, "reason": f"never seen (findings seen: {seen})"}
    first = found[0]
    at = first.first_seen - facts.start
    if ef.within is None:
        return {**out, "met": True, "reason": f"seen at {at:.1f}s: {first.evidence}"}
    start = _finding_cause(ef, first, facts)
    from_s = start.at_s if start else (facts.healthy_at_s or 0.0)
    took = at - from_s
    met = took <= ef.within
    reason = f"seen {took:.1f}s after {'the cause' if start else 'the start'}: {first.evidence}"
    return {**out, "met": met, "reason": reason if met else f"{reason} (within {ef.within:g}s)"}


def sighting_report(s: Sighting, facts: DrillFacts) -> dict[str, Any]:
    return {
        "finding": s.finding,
        "targets": list(s.targets),
        "data_class": s.data_class,
        "first_seen_s": _rel(s.first_seen, facts.start),
        "evidence": s.evidence,
        "facts": dict(s.facts),
    }


def violations(sc: Scenario, facts: DrillFacts, incidents: list[dict[str, Any]]) -> list[str]:
    out = []
    if not facts.api_answered and (sc.expect or sc.expect_finding or sc.max_incidents is not None):
        out.append("the daemon's incidents API never answered: nothing could be checked")
    if facts.healthy_at_s is None:
        out.append("the sandbox never became healthy: the timeline did not run")
    if sc.max_incidents is not None and len(incidents) > sc.max_incidents:
        out.append(f"{len(incidents)} incidents, at most {sc.max_incidents} allowed")
    if sc.expect_no_playbooks:
        out += [f"incident {i['id']} ran {i['playbook']}" for i in incidents if i["playbook"]]
    out += [
        f"event {e.do} {e.target} at {e.at_s:.1f}s failed: {e.error}"
        for e in facts.events
        if e.error
    ]
    for inc in incidents:
        if inc["recovery_s"] is not None and inc["recovery_s"] > facts.rto_s:
            out.append(
                f"incident {inc['id']} recovered in {inc['recovery_s']:.1f}s > RTO {facts.rto_s:g}s"
            )
    return out


def data_block(data: DataFacts, start: float) -> dict[str, Any]:
    """Rows written, rows lost (acknowledged before the fault, absent at the end) and the
    loss window: the fault's time minus the newest surviving row's (0 when none lost)."""
    fault_at = data.fault_at
    before = {s: t for s, t in data.acked.items() if fault_at is None or t < fault_at}
    out: dict[str, Any] = {
        "rows_attempted": data.attempted,
        "rows_written": len(data.acked),
        "rows_lost": None,
        "loss_window_s": None,
        "fault_at_s": _rel(fault_at, start),
        "newest_surviving_at_s": None,
        "error": data.error,
    }
    if data.surviving is None:
        return out
    lost = [s for s in before if s not in data.surviving]
    kept = [t for s, t in before.items() if s in data.surviving]
    newest = max(kept) if kept else None
    out["rows_lost"] = len(lost)
    out["newest_surviving_at_s"] = _rel(newest, start)
    end = fault_at if fault_at is not None else max(before.values(), default=start)
    floor = newest if newest is not None else (data.first_at or start)
    out["loss_window_s"] = round(max(0.0, end - floor), 3) if lost else 0.0
    return out


def data_violations(block: dict[str, Any] | None, rpo_s: float | None) -> list[str]:
    if block is None:
        return []
    if block["rows_lost"] is None:
        return [f"data: could not read the rows back: {block['error']}"]
    window = block["loss_window_s"]
    if rpo_s is not None and window > rpo_s:
        return [f"data: lost {block['rows_lost']} rows, a {window:.1f}s window > RPO {rpo_s:g}s"]
    return []


def build_report(sc: Scenario, facts: DrillFacts) -> dict[str, Any]:
    incidents = [incident_report(i, facts) for i in facts.incidents]
    expectations = [judge(ex, facts) for ex in sc.expect]
    expectations += [judge_finding(ef, facts) for ef in sc.expect_finding]
    ref_s = reference_s(facts.events, facts.healthy_at_s)
    expectations += [judge_backup(eb, facts.backups, facts.start, ref_s) for eb in sc.expect_backup]
    broken = violations(sc, facts, incidents)
    data = data_block(facts.data, facts.start) if facts.data is not None else None
    broken += data_violations(data, facts.rpo_s)
    extra = {"data": data} if data is not None else {}
    return {
        "scenario": sc.name,
        "started_at": facts.start,
        "passed": all(e["met"] for e in expectations) and not broken,
        "objectives": {"rto_s": facts.rto_s, "rpo_s": facts.rpo_s},
        "healthy_at_s": facts.healthy_at_s,
        "duration_s": sc.duration,
        "ended_at_s": facts.ended_at_s,
        "events": [
            {"at_s": e.at_s, "do": e.do, "target": e.target, "result": e.result, "error": e.error}
            for e in facts.events
        ],
        "incidents": incidents,
        "findings": [sighting_report(s, facts) for s in facts.sightings],
        "expectations": expectations,
        "violations": broken,
        **extra,
    }


def summary(report: dict[str, Any]) -> str:
    """The readable account of a drill: timeline, incidents against the RTO, verdict."""
    rto = report["objectives"]["rto_s"]
    lines = [f"drill: {report['scenario']}", "timeline:"]
    if report["healthy_at_s"] is not None:
        lines.append(f"  {report['healthy_at_s']:7.1f}s  sandbox healthy")
    lines += [
        f"  {e['at_s']:7.1f}s  {e['do']} {e['target']} {e['error']}" for e in report["events"]
    ]
    lines.append(f"incidents: {len(report['incidents'])}")
    for f in report.get("findings") or []:
        lines.append(
            f"  finding {f['finding']} {f['targets']} first seen {_secs(f['first_seen_s'])}: "
            f"{f['evidence']}"
        )
    for inc in report["incidents"]:
        lines.append(
            f"  {inc['id']}: {inc['scope']} {inc['role'] or ''} {inc['targets']} "
            f"{inc['finding']} -> {inc['playbook'] or 'no playbook'}: {inc['outcome']}; "
            f"detected {_secs(inc['detection_s'])}, recovered {_secs(inc['recovery_s'])} "
            f"(RTO {rto:g}s)"
        )
    lines.append("expectations:")
    for ex in report["expectations"]:
        mark = "met " if ex["met"] else "FAIL"
        what = ex.get("expect", ex.get("expect_finding", ex.get("expect_backup")))
        lines.append(f"  [{mark}] {what}: {ex['reason']}")
    lines += [f"violation: {v}" for v in report["violations"]]
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
