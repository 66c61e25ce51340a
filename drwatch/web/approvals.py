"""Approving a gated step of a running playbook with the operator's usual command.

`drwatch approve INCIDENT` (and `POST /api/v1/incidents/{id}/approve`, the status page's
button) approves an incident that waits for approval before it acts; the same command
approves the step of a running incident's playbook that waits for one
(`restore_from_dump`, drwatch.act.approvals). `ApprovingControls` wraps the daemon's
controls: a step that waits is approved first, anything else goes on as before.

`/api/v1/status` shows the step that waits on its incident, as `pending_approval`
(`what`, `requested_at`), and lists it under `approvals`.

With several watchers a step's request and its answer live in the leader's own store
(the step runs there): approving a running incident's step on a follower is refused
with 409 and the leader's name, so the operator sends it there; nothing is queued that
could approve a later step nobody has seen yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from drwatch import lifecycle
from drwatch.act.approvals import StepApprovals
from drwatch.cycle import NotAwaitingApprovalError, WatcherState
from drwatch.decide.gates import APPROVAL_PREFIX
from drwatch.model.incident import Incident
from drwatch.model.snapshot import Snapshot
from drwatch.web.api import Controls, IncidentReader, add_status_hook, iso


class ApprovingControls:
    """The daemon's controls, with step approvals answered first."""

    def __init__(
        self,
        inner: Controls,
        steps: StepApprovals,
        incidents: IncidentReader,
        not_leading: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._inner = inner
        self._steps = steps
        self._incidents = incidents
        self._not_leading = not_leading  # why this watcher runs no step; None: it does

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
        if step and (why := self._not_leading()) is not None:
            raise NotAwaitingApprovalError(
                f"incident {incident_id} is running on the leader, not here ({why}): "
                "approve its waiting step through the leader's API"
            )
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
