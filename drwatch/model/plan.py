"""The seam between decide and act: a plan to run a playbook, and what a run reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Scope(StrEnum):
    """How wide an outage is. `provider_api` and `watcher` are never acted on."""

    INSTANCE = "instance"
    ZONE = "zone"
    REGION = "region"
    PROVIDER_API = "provider_api"
    WATCHER = "watcher"


class PlaybookName(StrEnum):
    """Playbook names are a contract (DESIGN.md)."""

    LB_FAILOVER_EIP = "load_balancer.failover_eip"
    LB_REPLACE = "load_balancer.replace"
    APP_REPLACE = "app_server.replace"
    DB_RECOVER = "database.recover"
    REGION_FAILOVER = "region.failover"


@dataclass(frozen=True, slots=True)
class Plan:
    """Run `playbook` for `incident_id` against `targets` (instance ids) of `group`.

    `avoid_zones` lists zones a replacement must not be placed in (a zone outage).
    """

    incident_id: str
    playbook: PlaybookName
    region: str
    zone: str
    group: str
    targets: tuple[str, ...]
    avoid_zones: tuple[str, ...] = ()
    reason: str = ""
    # Why this plan needs an operator's approval whatever the policy says ("" when it
    # does not): e.g. a database whose role nobody knows would be recovered as a primary.
    approval: str = ""


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    status: StepStatus
    started_at: float | None = None
    ended_at: float | None = None
    detail: str = ""
    # The watcher that ran it (the journal row's owner): with several, who acted.
    by: str = ""


class RunOutcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RunProgress:
    """What the runner reports of one playbook run."""

    run_id: str
    incident_id: str
    playbook: PlaybookName
    outcome: RunOutcome
    steps: tuple[StepRecord, ...] = ()
    started_at: float = 0.0
    ended_at: float | None = None
    detail: str = ""
    new_instances: tuple[str, ...] = field(default=())
