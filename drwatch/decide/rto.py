"""RTO watch, pure: which open incidents have outlived their recovery time objective.

The objective of an incident is the strictest RTO among the data classes of its groups
(a database group names its class), else the overall one. An incident counts while it is
open and not recovered, when it is an outage or covers a zone or a region (those are
service-wide whether drwatch may act or not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from drwatch.config import GroupConfig, ObjectivesConfig
from drwatch.model.incident import Incident, IncidentOutcome
from drwatch.model.plan import Scope

_WIDE = frozenset({Scope.ZONE, Scope.REGION})


@dataclass(frozen=True, slots=True)
class RtoPolicy:
    """The overall RTO, and per group the data class whose (stricter) RTO applies."""

    overall: float
    by_group: Mapping[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, objectives: ObjectivesConfig, groups: Sequence[GroupConfig]) -> RtoPolicy:
        classes = objectives.data_classes
        by_group = {
            g.name: (g.data_class, classes[g.data_class].rto)
            for g in groups
            if g.data_class and g.data_class in classes
        }
        return cls(objectives.rto, by_group)

    def objective(self, incident: Incident) -> tuple[str, float]:
        """(data class or "", seconds) for this incident."""
        found = [self.by_group[g] for g in incident.groups if g in self.by_group]
        return min(found, key=lambda c: c[1]) if found else ("", self.overall)


@dataclass(frozen=True, slots=True)
class RtoOverdue:
    """One open incident past its objective: open for `open_for` s against `objective` s."""

    incident: Incident
    objective: float
    data_class: str
    open_for: float

    @property
    def reason(self) -> str:
        what = f"RTO of data class {self.data_class}" if self.data_class else "overall RTO"
        return (
            f"{self.incident.scope_key} open {self.open_for:.0f} s, past its "
            f"{what} of {self.objective:.0f} s"
        )


def counts(incident: Incident) -> bool:
    if not incident.is_open or incident.outcome is IncidentOutcome.RECOVERED:
        return False
    return incident.severity == "outage" or incident.scope in _WIDE


def rto_overdue(
    incidents: Iterable[Incident], now: float, policy: RtoPolicy | None
) -> tuple[RtoOverdue, ...]:
    """The incidents past their RTO at `now` (none without a policy)."""
    if policy is None:
        return ()
    out = []
    for inc in incidents:
        if not counts(inc):
            continue
        data_class, objective = policy.objective(inc)
        if now - inc.opened_at > objective:
            out.append(RtoOverdue(inc, objective, data_class, now - inc.opened_at))
    return tuple(out)
