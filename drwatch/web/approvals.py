"""Approving a gated step of a running playbook with the operator's usual command.

`drwatch approve INCIDENT` (and `POST /api/v1/incidents/{id}/approve`, the status page's
button) approves an incident that waits for approval before it acts; the same command
approves the step of a running incident's playbook that waits for one
(`restore_from_dump`, drwatch.act.approvals). `ApprovingControls` wraps the daemon's
controls: a step that waits is approved first, anything else goes on as before.

`/api/v1/status` shows the step that waits on its incident, as `pending_approval`
(`what`, `requested_at`), and lists it under `approvals`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from drwatch import lifecycle
from drwatch.act.approvals import StepApprovals
from drwatch.cycle import WatcherState
from drwatch.decide.gates import APPROVAL_PREFIX
from drwatch.model.incident import Incident
from drwatch.model.snapshot import Snapshot
from drwatch.web.api import Controls, IncidentReader, add_status_hook, iso


class ApprovingControls:
    """The daemon's controls, with step approvals answered first."""

    def __init__(self, inner: Controls, steps: StepApprovals, incidents: IncidentReader) -> None:
        self._inner = inner
        self._steps = steps
        self._incidents = incidents

    @property
    def paused(self) -> bool:
        return self._inner.paused

    def pause(self, now: float, by: str = "api") -> None:
        self._inner.pause(now, by)

    def resume(self, now: float, by: str = "api") -> bool:
        return self._inner.resume(now, by)

    def watcher_state(self, now: float) -> WatcherState:
        return self._inner.watcher_state(now)

    def approve(self, incident_id: str, now: float, by: str = "api") -> Incident:
        """The incident's waiting step; else (an incident that waits at its gates, or
        nothing waits) the daemon's own approval, with its answers and errors."""
        inc = self._incidents.get(incident_id)
        step = inc is not None and inc.is_open and not lifecycle.approvable(inc, APPROVAL_PREFIX)
        if inc is not None and step and self._steps.approve(incident_id, by, now):
            return inc
        return self._inner.approve(incident_id, now, by)


def add_routes(app: web.Application, steps: StepApprovals) -> None:
    """Each open incident's waiting step in /api/v1/status."""

    def hook(doc: dict[str, Any], _snapshot: Snapshot | None) -> None:
        waiting: list[dict[str, Any]] = []
        for inc_doc in doc.get("open_incidents", []):
            pending = steps.pending(str(inc_doc.get("id")))
            if pending is None:
                continue
            shown = {"what": pending["what"], "requested_at": _iso(pending["requested_at"])}
            inc_doc["pending_approval"] = shown
            waiting.append({"incident": inc_doc.get("id"), **shown})
        doc["approvals"] = waiting

    add_status_hook(app, hook)


def _iso(value: object) -> str | None:
    return iso(float(value)) if isinstance(value, int | float) else None
