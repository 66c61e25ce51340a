"""An operator's approval of one gated step of a running playbook (drwatch.act.base.Approvals).

`database.recover`'s last rung, `restore_from_dump`, waits for an operator before it
restores a dump (the data lost is the dump's age). The step asks (`request`); the
operator answers with the same command as for a gated incident, `drwatch approve
INCIDENT` or `POST /api/v1/incidents/{id}/approve` (drwatch.web.approvals routes it
here); the step reads the answer (`approved`).

The request and the answer are kept in the incident store's controls (one row per
incident), so they survive a restart of the daemon: a resumed run finds the approval
it was given, and a pending request still shows.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from drwatch.logs import get_logger

KEY = "step-approval:"
log = get_logger(component="approvals")


class ControlStore(Protocol):
    """Where operator controls are kept (drwatch.incidents.IncidentStore)."""

    def get_control(self, key: str) -> str | None: ...

    def set_control(self, key: str, value: str) -> None: ...


class StepApprovals:
    """Approvals of playbook steps, kept in the incident store's controls."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store

    def _read(self, incident_id: str) -> dict[str, Any] | None:
        raw = self._store.get_control(KEY + incident_id)
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("what"), str) else None

    def _write(self, incident_id: str, value: dict[str, Any]) -> None:
        self._store.set_control(KEY + incident_id, json.dumps(value, sort_keys=True))

    def request(self, incident_id: str, what: str, now: float) -> None:
        """The step waits for `what`; asked again (a resumed run), the request and any
        approval already given stay as they are."""
        current = self._read(incident_id)
        if current is not None and current["what"] == what:
            return
        self._write(incident_id, {"what": what, "requested_at": now, "by": None, "at": None})
        log.info("approval.requested", incident=incident_id, what=what)

    def approved(self, incident_id: str, what: str) -> str | None:
        """Who approved the step named `what` (the request's first words), or None."""
        current = self._read(incident_id)
        if current is None or not str(current["what"]).startswith(what):
            return None
        by = current.get("by")
        return str(by) if by else None

    def pending(self, incident_id: str) -> dict[str, Any] | None:
        """The request nobody has approved yet: `what` and `requested_at`."""
        current = self._read(incident_id)
        if current is None or current.get("by"):
            return None
        return {"what": current["what"], "requested_at": current.get("requested_at")}

    def approve(self, incident_id: str, by: str, now: float) -> str | None:
        """Approve the incident's pending step; what was approved, or None when no step
        of it waits."""
        current = self._read(incident_id)
        if current is None or current.get("by"):
            return None
        self._write(incident_id, {**current, "by": by, "at": now})
        log.info("approval.given", incident=incident_id, what=current["what"], by=by)
        return str(current["what"])
