"""Reading the daemon's JSON API: incidents and status. The one module that knows its shape.

Incidents come from `GET /api/v1/incidents` (a list, or `{"incidents": [...]}`), each
with id, scope, role, region, zone, targets (names), finding, opened_at, playbook,
outcome, recovered_at and steps (docs/api.md). Times are read from the `*_ts` epoch
twin when present, else from the ISO 8601 text. If the API changes shape, only this
module changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from drwatch.sandbox.backup_verdict import parse_backups

INCIDENTS_PATH = "/api/v1/incidents"
STATUS_PATH = "/api/v1/status"
BACKUPS_PATH = "/api/v1/backups"
TIMEOUT = aiohttp.ClientTimeout(total=3)


@dataclass(frozen=True)
class Step:
    name: str
    status: str
    started_at: float | None
    ended_at: float | None
    detail: str


@dataclass(frozen=True)
class Incident:
    id: str
    scope: str
    role: str | None
    region: str | None
    zone: str | None
    targets: tuple[str, ...]
    finding: str
    opened_at: float
    playbook: str | None
    outcome: str | None
    recovered_at: float | None
    ended_at: float | None
    steps: tuple[Step, ...] = field(default=())
    # What opened it (the finding may have changed since), and its verdicts so far.
    opened_finding: str = ""
    outcomes_seen: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeenFinding:
    """A finding in the status document (`findings`), warnings included."""

    finding: str
    targets: tuple[str, ...]
    data_class: str | None
    evidence: str
    facts: Mapping[str, str] = field(default_factory=dict)


def epoch(value: object) -> float | None:
    """Epoch seconds from a number or ISO 8601 text; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _time(raw: Mapping[str, Any], key: str) -> float | None:
    """The `key_ts` epoch twin when the API gives one, else `key` (ISO text or a number)."""
    twin = epoch(raw.get(f"{key}_ts"))
    return twin if twin is not None else epoch(raw.get(key))


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return str(value) if value not in (None, "") else None


def _targets(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(str(item.get("name") or item.get("id") or ""))
    return tuple(sorted(t for t in out if t))


def _step(raw: Mapping[str, Any]) -> Step:
    return Step(
        name=str(raw.get("name", "")),
        status=str(raw.get("status", "")),
        started_at=_time(raw, "started_at"),
        ended_at=_time(raw, "ended_at"),
        detail=str(raw.get("detail", "")),
    )


def parse_incident(raw: Mapping[str, Any]) -> Incident:
    steps = raw.get("steps") or []
    return Incident(
        id=str(raw.get("id", "")),
        scope=str(raw.get("scope", "")),
        role=_text(raw, "role"),
        region=_text(raw, "region"),
        zone=_text(raw, "zone"),
        targets=_targets(raw.get("targets")),
        finding=str(raw.get("finding", "")),
        opened_at=_time(raw, "opened_at") or 0.0,
        playbook=_text(raw, "playbook"),
        outcome=_text(raw, "outcome"),
        recovered_at=_time(raw, "recovered_at"),
        ended_at=_time(raw, "closed_at") or _time(raw, "ended_at"),
        steps=tuple(_step(s) for s in steps if isinstance(s, Mapping)),
        opened_finding=str(raw.get("opened_finding") or raw.get("finding", "")),
    )


def parse_incidents(body: object) -> list[Incident]:
    items = body.get("incidents", []) if isinstance(body, Mapping) else body
    if not isinstance(items, list):
        return []
    return [parse_incident(i) for i in items if isinstance(i, Mapping)]


def parse_findings(body: object) -> list[SeenFinding]:
    items = body.get("findings") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        return []
    out = []
    for raw in items:
        if not isinstance(raw, Mapping):
            continue
        facts = raw.get("facts")
        out.append(
            SeenFinding(
                finding=str(raw.get("finding", "")),
                targets=_targets(raw.get("targets")),
                data_class=_text(raw, "data_class"),
                evidence=str(raw.get("evidence", "")),
                facts={str(k): str(v) for k, v in facts.items()}
                if isinstance(facts, Mapping)
                else {},
            )
        )
    return out


def _healths(node: object) -> Iterator[str]:
    """Every value under a `health` key, anywhere in the status document."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "health" and isinstance(value, str):
                yield value
            else:
                yield from _healths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _healths(item)


def status_healthy(body: object) -> bool:
    """The daemon says `all_healthy`; without that field, everything it reports is `up`."""
    if isinstance(body, Mapping) and isinstance(body.get("all_healthy"), bool):
        return bool(body["all_healthy"]) and all(v == "up" for v in _healths(body))
    values = list(_healths(body))
    return bool(values) and all(v == "up" for v in values)


class DaemonApi:
    """The daemon's API at `base_url`. Methods return None when the API is not there."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session

    async def _get(self, path: str) -> object | None:
        try:
            async with self._session.get(self.base_url + path, timeout=TIMEOUT) as resp:
                if resp.status != 200:
                    return None
                body: object = await resp.json(content_type=None)
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def incidents(self) -> list[Incident] | None:
        body = await self._get(INCIDENTS_PATH)
        return None if body is None else parse_incidents(body)

    async def findings(self) -> list[SeenFinding] | None:
        body = await self._get(STATUS_PATH)
        return None if body is None else parse_findings(body)

    async def backups(self) -> list[tuple[str, str, str, str, str]] | None:
        """The catalogue's backups (GET /api/v1/backups); None without an answer."""
        body = await self._get(BACKUPS_PATH)
        return None if body is None else parse_backups(body)

    async def healthy(self) -> bool | None:
        body = await self._get(STATUS_PATH)
        return None if body is None else status_healthy(body)
