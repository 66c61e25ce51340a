"""What comes next, for the API and the status page: drills due, and early warnings.

`OutlookState` holds the drill ledger, the drill objectives and the latest trend report
(the daemon refreshes it). `add_routes` serves `GET /api/v1/drills`; `extend_status`
adds `drills` and `trends` to `GET /api/v1/status`, and the trend warnings to its
`findings` (docs/api.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from drwatch.assess.trends import TrendReport
from drwatch.ledger import DrillDue, DrillLedger, DrillRecord, drill_status
from drwatch.model.snapshot import Snapshot
from drwatch.web.api import add_status_hook, finding_doc, guard_read, iso

JSON = dict[str, Any]


@dataclass
class OutlookState:
    ledger: DrillLedger
    drill_interval: float
    drill_kinds: tuple[str, ...]
    trends: TrendReport = field(default_factory=TrendReport)
    clock: Callable[[], float] = time.time

    def due(self, now: float) -> tuple[DrillDue, ...]:
        return drill_status(self.ledger.latest(), self.drill_kinds, self.drill_interval, now)


OUTLOOK_KEY: web.AppKey[OutlookState] = web.AppKey("drwatch_outlook", OutlookState)


def add_routes(app: web.Application, state: OutlookState) -> None:
    """/api/v1/drills (under the read-token rule of the other read endpoints), and the
    drills and trends parts of /api/v1/status."""
    app[OUTLOOK_KEY] = state
    app.router.add_get("/api/v1/drills", guard_read(drills, query=("limit", "full")))

    def hook(doc: JSON, snapshot: Snapshot | None) -> None:
        names = {i.id: i.name for i in snapshot.fleet} if snapshot else {}
        extend_status(doc, state, names)

    add_status_hook(app, hook)


def record_doc(rec: DrillRecord, *, full: bool = False) -> JSON:
    doc = rec.to_dict()
    doc["started_at_ts"], doc["ended_at_ts"] = rec.started_at, rec.ended_at
    doc["started_at"], doc["ended_at"] = iso(rec.started_at), iso(rec.ended_at)
    if not full:
        doc.pop("report")
    return doc


def due_doc(d: DrillDue, now: float) -> JSON:
    return {
        "kind": d.kind,
        "last_passed_at": iso(d.last_passed_at),
        "last_passed_at_ts": d.last_passed_at,
        "due_at": iso(d.due_at),
        "due_at_ts": d.due_at,
        "overdue": d.overdue,
        "text": d.describe(now),
    }


def drills_doc(state: OutlookState, limit: int = 50, *, full: bool = False) -> JSON:
    now = state.clock()
    recent = state.ledger.recent(limit)
    return {
        "drills": [record_doc(r, full=full) for r in recent],
        "last": record_doc(recent[0]) if recent else None,
        "due": [due_doc(d, now) for d in state.due(now)],
        "interval_s": state.drill_interval,
        "kinds": list(state.drill_kinds),
    }


async def drills(request: web.Request, _api_state: Any) -> web.Response:
    state = request.app[OUTLOOK_KEY]
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "50"))))
    except ValueError:
        return web.json_response({"error": "limit must be a whole number"}, status=400)
    full = request.query.get("full", "") in ("1", "true", "yes")
    return web.json_response(drills_doc(state, limit, full=full))


def trends_doc(report: TrendReport) -> JSON:
    return {
        "disks": [
            {
                "instance": t.instance,
                "instance_id": t.instance_id,
                "mount": t.mount,
                "used_percent": round(t.used_percent, 2),
                "rate_bytes_per_s": round(t.rate_bytes_per_s, 3),
                "eta_s": None if t.eta_s is None else round(t.eta_s, 1),
                "samples": t.samples,
                "span_s": round(t.span_s, 1),
            }
            for t in report.disks
        ],
        "pressure": [
            {
                "instance": p.instance,
                "instance_id": p.instance_id,
                "resource": p.resource,
                "percent": round(p.percent, 1),
                "lasted_s": round(p.lasted_s, 1),
            }
            for p in report.pressure
            if p.lasted_s > 0
        ],
    }


def extend_status(doc: JSON, state: OutlookState, names: Mapping[str, str]) -> None:
    """Add the drills and trends parts, and the trend warnings to `findings`."""
    doc["drills"] = drills_doc(state, limit=1)
    doc["drills"].pop("drills")
    doc["trends"] = trends_doc(state.trends)
    doc.setdefault("findings", []).extend(finding_doc(d, names) for d in state.trends.diagnoses)
