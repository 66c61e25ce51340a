"""The tick's one-line summary: what an operator reads first, most pressing first.

"no action: 11/11 healthy", "started app_server.replace for app-3",
"blocked: app-3 replace, cooldown until 14:05Z", "watcher impaired: canaries failing,
not acting". Wording only: pure, from the tick's results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from drwatch.assess import Assessment
from drwatch.model.findings import Diagnosis
from drwatch.model.incident import Incident, IncidentOutcome, IncidentState
from drwatch.model.plan import Plan


def summarise(
    *,
    impaired_reason: str | None,
    started: tuple[Plan, ...],
    open_incidents: tuple[Incident, ...],
    assessment: Assessment,
    paused: bool,
    names: Mapping[str, str],
) -> str:
    """The tick's verdict in one line, most pressing first."""
    if impaired_reason is not None:
        return f"watcher impaired: {_impaired_why(impaired_reason)}, not acting"
    if started:
        return "; ".join(
            f"started {p.playbook.value} for {_targets(p.targets, names)}" for p in started
        )
    for pick, render in _INCIDENT_LINES:
        hits = [i for i in open_incidents if pick(i)]
        if hits:
            more = len(open_incidents) - 1
            return render(hits[0]) + (f" (+{more} more open)" if more else "")
    a = assessment
    out = f"no action: {a.healthy}/{a.total} healthy"
    if paused:
        out += " (paused)"
    if a.warnings:
        notes = ", ".join(f"{d.finding.value} {_what_d(d, names)}" for d in a.warnings[:3])
        out += f"; {len(a.warnings)} warning(s): {notes}"
    return out


def _impaired_why(reason: str) -> str:
    if "canar" in reason:
        return "canaries failing"
    if reason.startswith("nothing answers"):
        return "nothing answers"
    return reason  # blind: what discovery could not find, and why


def _targets(ids: tuple[str, ...], names: Mapping[str, str]) -> str:
    return ",".join(names.get(t, t) for t in ids) or "-"


def _what(i: Incident) -> str:
    if i.scope.value == "instance":
        return ",".join(i.target_names)
    return i.scope_key.replace(":", " ")


def _what_d(d: Diagnosis, names: Mapping[str, str]) -> str:
    if d.scope.value == "instance":
        return _targets(d.targets, names)
    return d.key.replace(":", " ")


def _verb(i: Incident) -> str:
    return i.playbook.value.rsplit(".", 1)[-1] if i.playbook else i.finding


def _acting(i: Incident) -> str:
    step = next((s.name for s in reversed(i.steps) if s.status.value == "running"), "")
    pb = i.playbook.value if i.playbook else "playbook"
    return f"acting: {pb} for {_what(i)}" + (f" (step {step})" if step else "")


def _blocked(i: Incident) -> str:
    why = i.gate_reasons[0] if i.gate_reasons else "blocked"
    return f"blocked: {_what(i)} {_verb(i)}, {why}"


def _awaiting(i: Incident) -> str:
    return f"awaiting approval: {_what(i)} {_verb(i)} (drwatch approve {i.id})"


def _failed_line(i: Incident) -> str:
    return f"failed: {_what(i)} {_verb(i)}: {i.detail or 'see the incident'}"


def _detected(i: Incident) -> str:
    return f"detected only: {_what(i)} {i.finding}, no action"


_INCIDENT_LINES: tuple[tuple[Callable[[Incident], bool], Callable[[Incident], str]], ...] = (
    (lambda i: i.state is IncidentState.ACTING and i.outcome is None, _acting),
    (lambda i: i.outcome is IncidentOutcome.BLOCKED, _blocked),
    (lambda i: i.outcome is IncidentOutcome.AWAITING_APPROVAL, _awaiting),
    (lambda i: i.outcome is IncidentOutcome.FAILED, _failed_line),
    (lambda i: i.outcome is IncidentOutcome.DETECTED_ONLY, _detected),
)
