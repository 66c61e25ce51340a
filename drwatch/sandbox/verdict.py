"""A drill's verdict, pure: events + incidents + the scenario -> the report (DESIGN.md).

Times in the report are seconds from the drill's start; `detection_s` and `recovery_s`
are measured from the fault that caused the incident (`cause` in the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drwatch.sandbox.daemon_api import Incident
from drwatch.sandbox.faults import HEAL
from drwatch.sandbox.scenario import Expect, Scenario


@dataclass(frozen=True)
class EventRecord:
    """One timeline event as it was applied: `at_s` from the drill's start."""

    at_s: float
    do: str
    target: str
    result: str = ""
    error: str = ""


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


def violations(sc: Scenario, facts: DrillFacts, incidents: list[dict[str, Any]]) -> list[str]:
    out = []
    if not facts.api_answered and (sc.expect or sc.max_incidents is not None):
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


def build_report(sc: Scenario, facts: DrillFacts) -> dict[str, Any]:
    incidents = [incident_report(i, facts) for i in facts.incidents]
    expectations = [judge(ex, facts) for ex in sc.expect]
    broken = violations(sc, facts, incidents)
    return {
        "scenario": sc.name,
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
        "expectations": expectations,
        "violations": broken,
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
        lines.append(f"  [{mark}] {ex['expect']}: {ex['reason']}")
    lines += [f"violation: {v}" for v in report["violations"]]
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
