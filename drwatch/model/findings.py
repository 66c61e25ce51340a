"""What assess concludes: named findings, each with a scope, a severity and its evidence.

A `Finding` is the kind ("instance stopped"); a `Diagnosis` is one occurrence of it
("instance:i-123 in us-east-1b, stopped at the provider"). docs/failure-detection.md
has the table of evidence each finding needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from drwatch.model.fleet import Role
from drwatch.model.plan import Scope


class Severity(StrEnum):
    """What a finding leads to.

    - outage:  an incident, and a playbook may act on it (through the gates);
    - alert:   an incident that is detected and reported, never acted on;
    - warning: no incident; shown in the status and the tick's report;
    - watcher: drwatch doubts its own network: no incident, no action at all.
    """

    OUTAGE = "outage"
    ALERT = "alert"
    WARNING = "warning"
    WATCHER = "watcher"

    @property
    def opens_incident(self) -> bool:
        return self in (Severity.OUTAGE, Severity.ALERT)


class Finding(StrEnum):
    """Every finding assess can make. `description` is the one-line meaning."""

    INSTANCE_STOPPED = "instance_stopped"
    INSTANCE_TERMINATED = "instance_terminated"
    INSTANCE_IMPAIRED = "instance_impaired"
    INSTANCE_UNREACHABLE = "instance_unreachable"
    APP_FAILED = "app_failed"
    APP_UNRESPONSIVE = "app_unresponsive"
    AGENT_DOWN = "agent_down"
    INSTANCE_SUSPECT = "instance_suspect"
    STATUS_CHECK_IMPAIRED = "status_check_impaired"
    CAPACITY_DISK = "capacity_disk"
    CAPACITY_MEMORY = "capacity_memory"
    ZONE_OUTAGE = "zone_outage"
    ZONE_IMPAIRED = "zone_impaired"
    ZONE_SUSPECT = "zone_suspect"
    ZONE_UNREACHABLE = "zone_unreachable"
    REGION_OUTAGE = "region_outage"
    REGION_SUSPECT = "region_suspect"
    PROVIDER_API_DOWN = "provider_api_down"
    CANARY_FAILING = "canary_failing"
    WATCHER_IMPAIRED = "watcher_impaired"
    # Early warning from the agents' recent samples (drwatch.assess.trends).
    DISK_FULL_SOON = "disk_full_soon"
    CPU_PRESSURE = "cpu_pressure"
    MEMORY_PRESSURE = "memory_pressure"
    VOLUME_IMPAIRED = "volume_impaired"
    WATCHER_BLIND = "watcher_blind"
    DISCOVERY_FAILING = "discovery_failing"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self][0]

    @property
    def severity(self) -> Severity:
        return _DESCRIPTIONS[self][1]

    @property
    def scope(self) -> Scope:
        return _DESCRIPTIONS[self][2]


_I, _Z, _R = Scope.INSTANCE, Scope.ZONE, Scope.REGION
_DESCRIPTIONS: dict[Finding, tuple[str, Severity, Scope]] = {
    Finding.INSTANCE_STOPPED: (
        "the provider says the instance is stopped or stopping",
        Severity.OUTAGE,
        _I,
    ),
    Finding.INSTANCE_TERMINATED: (
        "the provider says the instance is terminated or shutting down",
        Severity.OUTAGE,
        _I,
    ),
    Finding.INSTANCE_IMPAIRED: (
        "the provider's status checks say impaired and neither agent nor app answers",
        Severity.OUTAGE,
        _I,
    ),
    Finding.INSTANCE_UNREACHABLE: (
        "running at the provider, but agent and app have both been down for the dead grace",
        Severity.OUTAGE,
        _I,
    ),
    Finding.APP_FAILED: (
        "the agent answers but the application has been down for the dead grace",
        Severity.OUTAGE,
        _I,
    ),
    Finding.APP_UNRESPONSIVE: (
        "the agent answers but the application has timed out for the dead grace: hung or "
        "overloaded; alert only, since replacing on timeouts churns an overloaded group",
        Severity.ALERT,
        _I,
    ),
    Finding.AGENT_DOWN: (
        "degraded: the agent is down while the application answers and the host runs",
        Severity.ALERT,
        _I,
    ),
    Finding.INSTANCE_SUSPECT: (
        "agent and/or app failing, not yet corroborated or still within the dead grace",
        Severity.WARNING,
        _I,
    ),
    Finding.STATUS_CHECK_IMPAIRED: (
        "the provider's status checks say impaired, but the instance still answers",
        Severity.WARNING,
        _I,
    ),
    Finding.CAPACITY_DISK: ("a disk is filling up (agent facts)", Severity.WARNING, _I),
    Finding.CAPACITY_MEMORY: ("memory is running out (agent facts)", Severity.WARNING, _I),
    Finding.ZONE_OUTAGE: (
        "the zone is lost: reported impaired with instances silent, or most of its "
        "instances unreachable while another zone answers",
        Severity.OUTAGE,
        _Z,
    ),
    Finding.ZONE_IMPAIRED: (
        "the provider reports the zone impaired, but its instances still answer",
        Severity.WARNING,
        _Z,
    ),
    Finding.ZONE_SUSPECT: (
        "most of the zone's instances are unreachable, still within the dead grace",
        Severity.WARNING,
        _Z,
    ),
    Finding.ZONE_UNREACHABLE: (
        "most of the zone's instances have been unreachable for the dead grace, but the "
        "provider reports the zone and them healthy: from one watcher a zone outage and a "
        "broken path to the zone look the same, so alert, never act",
        Severity.ALERT,
        _Z,
    ),
    Finding.REGION_OUTAGE: (
        "the region's API and every instance in it are unreachable while the canaries "
        "and another region answer",
        Severity.OUTAGE,
        _R,
    ),
    Finding.REGION_SUSPECT: (
        "the region's API and instances are unreachable, still within the dead grace",
        Severity.WARNING,
        _R,
    ),
    Finding.PROVIDER_API_DOWN: (
        "the region's provider API fails while its agents and apps answer: alert, never act",
        Severity.ALERT,
        Scope.PROVIDER_API,
    ),
    Finding.CANARY_FAILING: (
        "some canaries fail while others answer",
        Severity.WARNING,
        Scope.WATCHER,
    ),
    Finding.WATCHER_IMPAIRED: (
        "every canary fails (or nothing answers at all): drwatch's own network is impaired",
        Severity.WATCHER,
        Scope.WATCHER,
    ),
    Finding.DISK_FULL_SOON: (
        "a disk's recent growth, fitted robustly, fills it within trends.disk_full_horizon",
        Severity.WARNING,
        _I,
    ),
    Finding.CPU_PRESSURE: (
        "CPU use has stayed at or above trends.cpu_percent for trends.sustain or longer",
        Severity.WARNING,
        _I,
    ),
    Finding.VOLUME_IMPAIRED: (
        "the provider reports a volume of the instance failed (state error) or its I/O "
        "impaired (volume status)",
        Severity.WARNING,
        _I,
    ),
    Finding.MEMORY_PRESSURE: (
        "memory use has stayed at or above trends.memory_percent for trends.sustain or longer",
        Severity.WARNING,
        _I,
    ),
    Finding.WATCHER_BLIND: (
        "discovery finds nothing to watch: it fails, or the fleet is empty while the "
        "config expects groups; drwatch cannot see the fleet, so it says so and never acts",
        Severity.WATCHER,
        Scope.WATCHER,
    ),
    Finding.DISCOVERY_FAILING: (
        "discovery fails in a region; the instances last seen there are still watched",
        Severity.WARNING,
        Scope.WATCHER,
    ),
}


def scope_key(scope: Scope, name: str = "") -> str:
    """`instance:i-123`, `zone:us-east-1c`, `region:eu-west-1`, `provider_api:us-east-1`,
    `watcher`: one incident per key while its finding persists."""
    return scope.value if scope is Scope.WATCHER else f"{scope.value}:{name}"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One finding about one scope. `targets` are the affected instance ids (sorted);
    `roles` the roles among them; `groups` their groups."""

    finding: Finding
    key: str
    region: str = ""
    zone: str = ""
    roles: tuple[Role, ...] = ()
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    evidence: str = ""
    since: float | None = None
    facts: tuple[tuple[str, str], ...] = field(default=())

    @property
    def scope(self) -> Scope:
        return self.finding.scope

    @property
    def severity(self) -> Severity:
        return self.finding.severity

    @property
    def role(self) -> str:
        """The single role, or the roles joined with ',' (a zone may hold several)."""
        return ",".join(r.value for r in self.roles)
