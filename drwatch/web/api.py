"""The JSON API (`/api/v1/...`): status, incidents, and token-protected controls.

Every field is documented in docs/api.md. Times are ISO 8601 UTC text, each with an
`*_ts` twin in epoch seconds. Mutating endpoints need `Authorization: Bearer <token>`
(the token from `watcher.api_token_file`); a wrong or missing token gets 401 with no
detail, and with no token configured they refuse with 403 and say how to set one.
Read endpoints are open unless `watcher.api_read_requires_token` is set.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import StreamReader, web

from drwatch.assess.views import is_retired
from drwatch.cycle import (
    IncidentNotFoundError,
    NotAwaitingApprovalError,
    TickReport,
    WatcherState,
)
from drwatch.model.findings import Diagnosis
from drwatch.model.incident import Incident
from drwatch.model.observation import Layer, TargetHealth
from drwatch.model.plan import StepRecord
from drwatch.model.snapshot import Snapshot

JSON = dict[str, Any]
MAX_BODY = 4096
# The longest query any endpoint takes is `open=true&limit=1000`: 512 bytes is generous.
MAX_QUERY = 512
# Incident ids look like `inc-20261126T140501-3f9a`; anything else cannot name one.
_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")
UNCONFIGURED = (
    "mutating endpoints are disabled because no API token is configured: put a token of at "
    "least 16 bytes in a file (chmod 600) and name it in watcher.api_token_file"
)
INSTANCE_LAYERS = (Layer.PROVIDER, Layer.AGENT, Layer.APP)


class Controls(Protocol):
    """The cycle's operator controls (drwatch.cycle.Cycle implements them)."""

    @property
    def paused(self) -> bool: ...

    def pause(self, now: float, by: str = "api") -> None: ...

    def resume(self, now: float, by: str = "api") -> bool: ...

    def approve(self, incident_id: str, now: float, by: str = "api") -> Incident: ...

    def watcher_state(self, now: float) -> WatcherState: ...


class IncidentReader(Protocol):
    """What the API reads of the incident store (drwatch.incidents.IncidentStore)."""

    def get(self, incident_id: str) -> Incident | None: ...

    def open_incidents(self) -> list[Incident]: ...

    def recent(self, *, open_only: bool = False, limit: int = 200) -> list[Incident]: ...

    def retired(self) -> frozenset[str]: ...


class ApiState(Protocol):
    """What the API reads. The daemon keeps one and updates it after every tick."""

    @property
    def watcher_name(self) -> str: ...

    @property
    def dry_run(self) -> bool: ...

    @property
    def api_token(self) -> bytes | None: ...

    @property
    def read_requires_token(self) -> bool: ...

    @property
    def incidents(self) -> IncidentReader: ...

    @property
    def controls(self) -> Controls: ...

    def latest_report(self) -> TickReport | None: ...

    def latest_snapshot(self) -> Snapshot | None: ...

    def now(self) -> float: ...


@dataclass
class LiveApiState:
    """The plain implementation: the daemon calls `update()` after each tick."""

    watcher_name: str
    dry_run: bool
    api_token: bytes | None
    incidents: IncidentReader
    controls: Controls
    read_requires_token: bool = False
    report: TickReport | None = None
    snapshot: Snapshot | None = None
    clock: Callable[[], float] = time.time

    def update(self, report: TickReport, snapshot: Snapshot) -> None:
        self.report, self.snapshot = report, snapshot

    def latest_report(self) -> TickReport | None:
        return self.report

    def latest_snapshot(self) -> Snapshot | None:
        return self.snapshot

    def now(self) -> float:
        return self.clock()


STATE_KEY: web.AppKey[ApiState] = web.AppKey("drwatch_api_state", ApiState)
# Other parts of the API (drwatch.web.outlook) add to the status document through these.
StatusHook = Callable[[JSON, Snapshot | None], None]
STATUS_HOOKS: web.AppKey[list[StatusHook]] = web.AppKey("drwatch_status_hooks", list)


def add_status_hook(app: web.Application, hook: StatusHook) -> None:
    """Let another part of the API add to the /api/v1/status document."""
    hooks = app.get(STATUS_HOOKS)
    if hooks is None:
        hooks = app[STATUS_HOOKS] = []
    hooks.append(hook)


def add_routes(app: web.Application, state: ApiState) -> None:
    app[STATE_KEY] = state
    app.router.add_get("/api/v1/status", _guard(status, mutating=False))
    app.router.add_get(
        "/api/v1/incidents", _guard(incidents, mutating=False, query=("open", "limit"))
    )
    # `{id:[^/]+}`, not `{id}`: aiohttp's default pattern leaves out `{` and `}`, and such
    # an id would get its plain-text 404 instead of this API's JSON 400.
    app.router.add_get("/api/v1/incidents/{id:[^/]+}", _guard(incident, mutating=False))
    app.router.add_post("/api/v1/incidents/{id:[^/]+}/approve", _guard(approve, mutating=True))
    app.router.add_post("/api/v1/pause", _guard(pause, mutating=True))
    app.router.add_post("/api/v1/resume", _guard(resume, mutating=True))


def add_read_route(
    app: web.Application, path: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> None:
    """A read-only route of another component, behind the same token rule as these."""

    async def wrapped(request: web.Request, _state: ApiState) -> web.Response:
        return await handler(request)

    app.router.add_get(path, _guard(wrapped, mutating=False))


# -- auth ------------------------------------------------------------------------------------

Handler = Callable[[web.Request, ApiState], Awaitable[web.Response]]


def guard_read(
    handler: Handler, query: tuple[str, ...] = ()
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A read endpoint added elsewhere, under the same token and query rules as these."""
    return _guard(handler, mutating=False, query=query)


def _guard(
    handler: Handler, *, mutating: bool, query: tuple[str, ...] = ()
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def guarded(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        refusal = _refuse(request, state, mutating=mutating)
        if refusal is not None:
            return refusal
        problem = _query_problem(request, query)
        if problem:
            return _error(400, problem)
        return await handler(request, state)

    return guarded


def _query_problem(request: web.Request, allowed: tuple[str, ...]) -> str:
    """Refuse a query string that is long, names a parameter twice, or names one the
    endpoint does not take (a typo such as `?opne=1` would otherwise be silently ignored)."""
    if len(request.query_string) > MAX_QUERY:
        return f"query string over {MAX_QUERY} bytes"
    keys = [k for k, _ in request.query.items()]
    unknown = sorted({k[:32] for k in keys if k not in allowed})
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no query parameters"
        return f"unknown query parameter(s) {', '.join(unknown)}: this endpoint {takes}"
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        return f"query parameter(s) given more than once: {', '.join(repeated)}"
    if "id" in request.match_info and not _INCIDENT_ID.match(request.match_info["id"]):
        return "not an incident id (like inc-20261126T140501-3f9a)"
    return ""


def _refuse(request: web.Request, state: ApiState, *, mutating: bool) -> web.Response | None:
    token = state.api_token
    if mutating and token is None:
        return _error(403, UNCONFIGURED)
    if token is None or not (mutating or state.read_requires_token):
        return None
    if not _token_ok(request.headers.get("Authorization", ""), token):
        return _error(401, "unauthorized")
    return None


def _token_ok(header: str, token: bytes) -> bool:
    scheme, _, given = header.partition(" ")
    # Compare even when the scheme is wrong, so timing says nothing about which part failed.
    same = hmac.compare_digest(given.strip().encode(), token)
    return same and scheme.lower() == "bearer"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# -- handlers --------------------------------------------------------------------------------


async def status(request: web.Request, state: ApiState) -> web.Response:
    doc = status_doc(state)
    for hook in request.app.get(STATUS_HOOKS, ()):
        hook(doc, state.latest_snapshot())
    return web.json_response(doc)


async def incidents(request: web.Request, state: ApiState) -> web.Response:
    open_text = request.query.get("open", "").lower()
    if open_text not in _TRUE + _FALSE:
        return _error(400, "open must be 1, true, yes, 0, false or no")
    open_only = open_text in _TRUE
    limit_text = request.query.get("limit", "200")
    digits = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 4
    if not (digits and 1 <= int(limit_text) <= 1000):
        return _error(400, "limit must be a whole number from 1 to 1000")
    limit = int(limit_text)
    found = state.incidents.recent(open_only=open_only, limit=limit)
    return web.json_response({"incidents": [incident_doc(i) for i in found], "count": len(found)})


async def incident(request: web.Request, state: ApiState) -> web.Response:
    found = state.incidents.get(request.match_info["id"])
    if found is None:
        return _error(404, f"no incident {request.match_info['id']}")
    return web.json_response(incident_doc(found))


async def approve(request: web.Request, state: ApiState) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    by = str(body.get("by") or "api")
    try:
        inc = state.controls.approve(request.match_info["id"], state.now(), by=by)
    except IncidentNotFoundError as err:
        return _error(404, str(err))
    except NotAwaitingApprovalError as err:
        return _error(409, str(err))
    return web.json_response(
        {
            "message": f"approved {inc.id}: drwatch acts on it at the next tick",
            "incident": incident_doc(inc),
        }
    )


async def pause(request: web.Request, state: ApiState) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    state.controls.pause(state.now(), by=str(body.get("by") or "api"))
    return web.json_response(
        {"message": "paused: drwatch keeps detecting but takes no action", "paused": True}
    )


async def resume(request: web.Request, state: ApiState) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    free = state.controls.resume(state.now(), by=str(body.get("by") or "api"))
    message = (
        "resumed: drwatch acts again"
        if free
        else "resumed, but the kill switch in the config (policy.paused) still holds"
    )
    return web.json_response({"message": message, "paused": not free})


async def _body(request: web.Request) -> JSON | web.Response:
    """An empty body, or a JSON object with an optional `by` (who, for the record)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    raw = await _read_capped(request.content, MAX_BODY)
    if raw is None:
        return _error(413, f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, NaN, nested too deeply
        return _error(400, "request body is not JSON")
    problem = _body_problem(body)
    return _error(400, problem) if problem else body


async def _read_capped(stream: StreamReader, cap: int) -> bytes | None:
    """The whole body, or None past `cap` bytes. One read() may return only the first
    chunk that arrived, so read until the end (or one byte past the cap)."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await stream.read(cap + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _body_problem(body: object) -> str:
    if not isinstance(body, dict) or set(body) - {"by"}:
        return 'request body must be a JSON object with at most a "by" field'
    by = body.get("by")
    if by is not None and (not isinstance(by, str) or not 0 < len(by) <= 64):
        return '"by" must be text of 1 to 64 characters'
    if by is not None and not by.isprintable():
        return '"by" must be printable text (it goes into logs and the journal)'
    return ""


# -- documents -------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _times(**named: float | None) -> JSON:
    """`name: ISO text` and `name_ts: epoch seconds` for each time."""
    out: JSON = {}
    for name, ts in named.items():
        out[name] = iso(ts)
        out[f"{name}_ts"] = ts
    return out


def step_doc(s: StepRecord) -> JSON:
    return {
        "name": s.name,
        "status": s.status.value,
        **_times(started_at=s.started_at, ended_at=s.ended_at),
        "detail": s.detail,
        "watcher": s.by or None,
    }


def incident_doc(i: Incident) -> JSON:
    return {
        "id": i.id,
        "scope": i.scope.value,
        "scope_key": i.scope_key,
        "finding": i.finding.value,
        "description": i.finding.description,
        "severity": i.severity.value,
        "role": i.role,
        "roles": list(i.roles),
        "region": i.region,
        "zone": i.zone,
        "groups": list(i.groups),
        "targets": list(i.target_names),
        "target_ids": list(i.target_ids),
        "evidence": i.evidence,
        "opened_finding": i.cause.value,
        "opened_evidence": i.opened_evidence or i.evidence,
        "phase": i.phase.value,
        "state": i.state.value,
        "outcome": i.outcome.value if i.outcome else None,
        "playbook": i.playbook.value if i.playbook else None,
        "playbooks": [p.value for p in i.playbooks],
        **_times(
            opened_at=i.opened_at,
            updated_at=i.updated_at,
            acted_at=i.acted_at,
            approved_at=i.approved_at,
            recovered_at=i.recovered_at,
            closed_at=i.closed_at,
        ),
        "gate_reasons": list(i.gate_reasons),
        "gate_history": [{**_times(at=g.at), "reasons": list(g.reasons)} for g in i.gate_history],
        "steps": [step_doc(s) for s in i.steps],
        "detail": i.detail,
    }


def _health_doc(th: TargetHealth) -> JSON:
    return {
        "health": th.health.value,
        "last": th.last.value,
        "reason": th.reason,
        **_times(since=th.since, attempted_at=th.attempted_at, ok_at=th.ok_at),
    }


def _named(snapshot: Snapshot, layer: Layer) -> list[JSON]:
    out = []
    for th in sorted(snapshot.layer(layer), key=lambda t: t.target):
        doc = {"name": th.target, **_health_doc(th)}
        if layer is Layer.ZONE and "state" in th.detail:
            doc["state"] = str(th.detail["state"])
        out.append(doc)
    return out


def _target_doc(snapshot: Snapshot, inst_id: str, retired: frozenset[str]) -> JSON:
    inst = snapshot.fleet.get(inst_id)
    assert inst is not None
    layers = {
        layer.value: _health_doc(th)
        for layer in INSTANCE_LAYERS
        if (th := snapshot.get(inst_id, layer)) is not None
    }
    return {
        "id": inst.id,
        "name": inst.name,
        "role": inst.role.value,
        "group": inst.group,
        "region": inst.region,
        "zone": inst.zone,
        "state": inst.state.value,
        # Replaced by a playbook (and fenced): no longer judged, its layers as last seen.
        "retired": is_retired(inst, retired),
        "layers": layers,
    }


def finding_doc(d: Diagnosis, names: Mapping[str, str]) -> JSON:
    return {
        "finding": d.finding.value,
        "description": d.finding.description,
        "severity": d.severity.value,
        "scope": d.scope.value,
        "scope_key": d.key,
        "region": d.region,
        "zone": d.zone,
        "role": d.role,
        "targets": [names.get(t, t) for t in d.targets],
        "target_ids": list(d.targets),
        "evidence": d.evidence,
        "facts": dict(d.facts),
        **_times(since=d.since),
    }


def status_doc(state: ApiState) -> JSON:
    report, snapshot = state.latest_report(), state.latest_snapshot()
    now = state.now()
    watcher_state = report.watcher_state if report else state.controls.watcher_state(now)
    doc: JSON = {
        "watcher": {
            "name": state.watcher_name,
            "state": watcher_state.value,
            "reason": report.watcher_reason if report else "",
            "dry_run": state.dry_run,
            "paused": state.controls.paused,
        },
        "summary": report.summary if report else "no tick yet",
        **_times(tick_at=report.at if report else None, now=now),
        "open_incidents": [incident_doc(i) for i in state.incidents.open_incidents()],
        "rto_overdue": [
            {"incident": o.incident.id, "objective_s": o.objective, "reason": o.reason}
            for o in (report.rto_overdue if report else ())
        ],
    }
    doc.update(_fleet_part(report, snapshot, state.incidents.retired()))
    return doc


def _fleet_part(
    report: TickReport | None, snapshot: Snapshot | None, retired: frozenset[str]
) -> JSON:
    if snapshot is None:
        return {
            "counts": {"healthy": 0, "total": 0},
            "all_healthy": False,
            "targets": [],
            "zones": [],
            "regions": [],
            "canaries": [],
            "services": [],
            "findings": [],
        }
    names = {i.id: i.name for i in snapshot.fleet}
    healthy = report.assessment.healthy if report else 0
    total = report.assessment.total if report else len(snapshot.fleet)
    findings = report.assessment.diagnoses if report else ()
    return {
        "counts": {"healthy": healthy, "total": total},
        "all_healthy": bool(report)
        and healthy == total
        and not any(d.severity.value in ("outage", "alert", "watcher") for d in findings),
        "targets": [_target_doc(snapshot, i.id, retired) for i in snapshot.fleet],
        "zones": _named(snapshot, Layer.ZONE),
        "regions": _named(snapshot, Layer.API),
        "canaries": _named(snapshot, Layer.CANARY),
        "services": _named(snapshot, Layer.SERVICE),
        "findings": [finding_doc(d, names) for d in findings],
    }
