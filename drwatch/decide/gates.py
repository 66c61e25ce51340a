"""The decision gates: pure functions, each returning a reason when it holds an action.

Detection always runs; action passes every gate or records why not. Reasons are for
people: "paused", "warm-up: 40 s left", "cooldown until 14:05Z".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drwatch.config import PolicyConfig
from drwatch.model.incident import Incident, IncidentOutcome
from drwatch.model.plan import Plan, PlaybookName
from drwatch.units import format_duration

APPROVAL_PREFIX = "approval required"


@dataclass(frozen=True, slots=True)
class GateInput:
    """Everything the gates look at for one incident, at `now`."""

    now: float
    started_at: float
    policy: PolicyConfig
    incident: Incident
    plans: tuple[Plan, ...]
    paused: bool = False
    pause_note: str = ""
    active_runs: int = 0
    # Incidents whose playbooks started within max(cooldown, blast_window) of now.
    recent: tuple[Incident, ...] = ()
    # Of those, the ones that replaced (or are replacing) instances: a run that failed
    # without replacing anything does not count toward the blast radius.
    replacing: tuple[Incident, ...] = ()
    group_of: Mapping[str, str] = field(default_factory=dict)
    group_sizes: Mapping[str, int] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)


Gate = Callable[[GateInput], str | None]


def utc_hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%MZ")


def pause_reason(note: str) -> str:
    return f"paused{': ' + note if note else ''}"


def gate_paused(g: GateInput) -> str | None:
    return pause_reason(g.pause_note) if g.paused else None


def gate_warmup(g: GateInput) -> str | None:
    left = g.started_at + g.policy.warmup - g.now
    return f"warm-up: {math.ceil(left)} s left" if left > 0 else None


def gate_approval(g: GateInput) -> str | None:
    """The policy's scopes, or a plan that asks for approval itself (an unknown role)."""
    if g.incident.approved_at:
        return None
    if g.incident.scope.value in g.policy.approval_required:
        scope = g.incident.scope.value
        return f"{APPROVAL_PREFIX} for {scope} scope: drwatch approve {g.incident.id}"
    why = "; ".join(p.approval for p in g.plans if p.approval)
    return f"{APPROVAL_PREFIX}: {why}: drwatch approve {g.incident.id}" if why else None


def _same_target(a: Incident, b: Incident) -> bool:
    """The same scope key, an instance in common, or the same member of the same group:
    a replacement keeps its predecessor's Name but not its id, and a replacement that
    dies at once must not be replaced again and again."""
    if a.scope_key == b.scope_key or set(a.target_ids) & set(b.target_ids):
        return True
    return bool(set(a.target_names) & set(b.target_names) and set(a.groups) & set(b.groups))


def gate_cooldown(g: GateInput) -> str | None:
    """No second action on the same scope key or the same targets within the cooldown."""
    last = max(
        (
            i.acted_at
            for i in g.recent
            if i.id != g.incident.id and i.acted_at is not None and _same_target(i, g.incident)
        ),
        default=None,
    )
    if last is None or last + g.policy.cooldown <= g.now:
        return None
    return f"cooldown until {utc_hm(last + g.policy.cooldown)}"


def gate_blast_radius(g: GateInput) -> str | None:
    """No more than `blast_radius` of a group replaced within `blast_window` (at least one,
    so a group of one can be recovered)."""
    since = g.now - g.policy.blast_window
    replaced: dict[str, set[str]] = {}
    for i in g.replacing:
        if i.id != g.incident.id and i.acted_at is not None and i.acted_at >= since:
            for t in i.target_ids:
                replaced.setdefault(_group(g, i, t), set()).add(t)
    for plan in g.plans:
        if plan.playbook is PlaybookName.REGION_FAILOVER:
            continue  # moves the service to another region; replaces no group members
        group = plan.group
        would = replaced.get(group, set()) | set(plan.targets)
        size = max(g.group_sizes.get(group, 0), len(would))
        limit = max(1, math.floor(g.policy.blast_radius * size))
        if len(would) > limit:
            return (
                f"blast radius: replacing {len(would)} of {size} in group {group} within "
                f"{format_duration(g.policy.blast_window)} exceeds "
                f"{g.policy.blast_radius:.0%} (limit {limit})"
            )
    return None


def _group(g: GateInput, incident: Incident, target: str) -> str:
    return g.group_of.get(target) or (incident.groups[0] if incident.groups else "")


def gate_concurrency(g: GateInput) -> str | None:
    if g.active_runs < g.policy.max_concurrent:
        return None
    return f"concurrency: {g.active_runs} of {g.policy.max_concurrent} playbook runs active"


def gate_dry_run(g: GateInput) -> str | None:
    if not g.policy.dry_run:
        return None
    what = ", ".join(f"{p.playbook.value} for {_names(g, p)}" for p in g.plans)
    return f"dry-run: would start {what}"


def _names(g: GateInput, plan: Plan) -> str:
    return ",".join(g.names.get(t, t) for t in plan.targets)


# In order: the first reasons are the ones an operator can least change quickly.
GATES: tuple[tuple[str, Gate], ...] = (
    ("paused", gate_paused),
    ("warmup", gate_warmup),
    ("approval", gate_approval),
    ("cooldown", gate_cooldown),
    ("blast_radius", gate_blast_radius),
    ("concurrency", gate_concurrency),
    ("dry_run", gate_dry_run),
)


@dataclass(frozen=True, slots=True)
class Decision:
    """`act` when every gate passed; otherwise the outcome to record and every reason."""

    act: bool
    outcome: IncidentOutcome | None
    reasons: tuple[str, ...]


def _why_no_plan(incident: Incident) -> str:
    if incident.severity != "outage":
        return f"detect only: {incident.finding} is never acted on"
    return f"no playbook for {incident.finding} on {incident.role or 'these targets'}"


def decide(g: GateInput) -> Decision:
    """Run every gate. Any holding reason blocks; approval alone means awaiting approval."""
    if not g.plans:
        return Decision(False, IncidentOutcome.DETECTED_ONLY, (_why_no_plan(g.incident),))
    reasons = tuple(r for _, gate in GATES if (r := gate(g)) is not None)
    if not reasons:
        return Decision(True, None, ())
    only_approval = all(r.startswith(APPROVAL_PREFIX) for r in reasons)
    outcome = IncidentOutcome.AWAITING_APPROVAL if only_approval else IncidentOutcome.BLOCKED
    return Decision(False, outcome, reasons)
