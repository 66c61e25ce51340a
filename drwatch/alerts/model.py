"""What an alert says: the plain value the daemon builds from an incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drwatch.model.incident import Incident

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AlertInput:
    """One firing alert. Labels identify it; annotations tell on-call what is going on.

    `summary` says what happened and what drwatch is doing about it ("zone us-east-1b
    is down: 4 instances; replacing app-3, app-4 in us-east-1c"); `description` may
    add detail. `started_at` (epoch seconds) is when the incident opened.
    """

    incident_id: str
    alertname: str
    severity: str
    scope: str
    summary: str
    started_at: float
    role: str = ""
    region: str = ""
    zone: str = ""
    description: str = ""

    @property
    def labels(self) -> dict[str, str]:
        """Alertmanager labels; empty values are left out (Prometheus treats them as absent)."""
        raw = {
            "alertname": self.alertname,
            "severity": self.severity,
            "scope": self.scope,
            "role": self.role,
            "region": self.region,
            "zone": self.zone,
            "incident": self.incident_id,
        }
        return {k: v for k, v in raw.items() if v}

    @property
    def key(self) -> LabelSet:
        """The alert's identity: its label set, as Alertmanager sees it."""
        return tuple(sorted(self.labels.items()))

    def payload(self, ends_at: float, generator_url: str) -> dict[str, Any]:
        """The JSON object Alertmanager's API v2 (and the webhook) receive."""
        annotations = {"summary": self.summary}
        if self.description:
            annotations["description"] = self.description
        body: dict[str, Any] = {
            "labels": self.labels,
            "annotations": annotations,
            "startsAt": iso(self.started_at),
            "endsAt": iso(ends_at),
        }
        if generator_url:
            body["generatorURL"] = generator_url
        return body


def iso(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager parses it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def watcher_impaired_alert(
    watcher: str, summary: str, since: float, *, reason: str = ""
) -> AlertInput:
    """drwatch's own alert: its canaries fail, or it cannot find the fleet (blind), so it
    distrusts what it sees and will not act."""
    if reason and "canar" not in reason:
        description = (
            f"drwatch ({watcher}) cannot see what it watches: {reason}. It opens no "
            "incidents and runs no playbooks until it can; check the provider credentials, "
            "the configured regions and groups, and the watcher host's network."
        )
    else:
        description = (
            f"drwatch ({watcher}) cannot reach its canaries outside every watched cloud. "
            "It opens no incidents and runs no playbooks until they answer again; "
            "check the watcher host's network."
        )
    return AlertInput(
        incident_id="",
        alertname="DrwatchWatcherImpaired",
        severity="warning",
        scope="watcher",
        summary=summary,
        started_at=since,
        description=description,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One alert on its way to a receiver: the API v2 payload, and whether it resolves."""

    key: LabelSet
    payload: dict[str, Any]
    resolved: bool


# The alert drwatch raises for an incident of each scope, and how loud it is. The
# Alertmanager example (deploy/alertmanager.yml) routes and inhibits on these.
ALERT_BY_SCOPE: dict[str, tuple[str, str]] = {
    "instance": ("DrwatchInstanceDown", "warning"),
    "zone": ("DrwatchZoneOutage", "critical"),
    "region": ("DrwatchRegionOutage", "critical"),
    "provider_api": ("DrwatchProviderApiDown", "warning"),
}


def incident_alert(
    incident_id: str,
    scope: str,
    summary: str,
    started_at: float,
    *,
    role: str = "",
    region: str = "",
    zone: str = "",
    description: str = "",
) -> AlertInput:
    """The alert for one open incident, named and graded by its scope."""
    alertname, severity = ALERT_BY_SCOPE.get(scope, ("DrwatchIncident", "warning"))
    return AlertInput(
        incident_id=incident_id,
        alertname=alertname,
        severity=severity,
        scope=scope,
        summary=summary,
        started_at=started_at,
        role=role,
        region=region,
        zone=zone,
        description=description,
    )


def _doing(inc: Incident) -> str:
    """What drwatch is doing about the incident, in the words on-call reads first."""
    if inc.outcome is not None and inc.outcome.value == "awaiting_approval":
        playbook = inc.playbook.value if inc.playbook else "a playbook"
        return f"waiting for approval to run {playbook}: `drwatch approve {inc.id}`"
    if inc.phase.value == "acting" and inc.playbook:
        done = sum(1 for s in inc.steps if s.status.value == "done")
        return f"running {inc.playbook.value} (step {done}/{len(inc.steps)} done)"
    if inc.gate_reasons:
        return "not acting: " + "; ".join(inc.gate_reasons)
    if inc.outcome is not None:
        return inc.outcome.value.replace("_", " ")
    return "deciding"


def alert_for_incident(inc: Incident) -> AlertInput:
    """The alert for one open incident: what happened, and what drwatch is doing about it."""
    where = inc.zone or inc.region or inc.scope_key
    targets = ", ".join(inc.target_names)
    what = f"{inc.scope.value} {where}: {inc.finding.replace('_', ' ')}"
    if targets:
        what += f" ({targets})"
    return incident_alert(
        inc.id,
        inc.scope.value,
        f"{what}; drwatch is {_doing(inc)}",
        inc.opened_at,
        role=inc.role,
        region=inc.region,
        zone=inc.zone,
        description=inc.evidence,
    )


def rto_alert(inc: Incident, reason: str) -> AlertInput:
    """An open incident has outlived its recovery time objective: page, whatever drwatch
    is doing about it (a blocked, failed or alert-only incident needs a person)."""
    return AlertInput(
        incident_id=inc.id,
        alertname="DrwatchRtoBreached",
        severity="critical",
        scope=inc.scope.value,
        summary=f"{reason}; drwatch is {_doing(inc)}",
        started_at=inc.opened_at,
        role=inc.role,
        region=inc.region,
        zone=inc.zone,
        description=inc.evidence,
    )
