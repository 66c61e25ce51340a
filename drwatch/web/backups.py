"""`GET /api/v1/backups`: the catalogue and the RPO of every class at every location.

Registered only when backups are configured; reads the same token rule as the other
read endpoints (drwatch.web.api). The body is `BackupService.doc(now)`; docs/api.md
and docs/backups.md describe it. The status document (`GET /api/v1/status`) gains a
`backups` part (each class at each location: the newest verified backup's age against
the RPO; what the status page's panel shows) and the findings `backup_rpo_breached`
(an alert) and `backup_failing` (a warning) in its `findings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from drwatch.web import api


class BackupView(Protocol):
    def doc(self, now: float) -> dict[str, Any]: ...
    def status_part(self, now: float) -> dict[str, Any]: ...


def add_routes(
    app: web.Application, view: BackupView, clock: Callable[[], float] = time.time
) -> None:
    async def backups(_request: web.Request) -> web.Response:
        return web.json_response(view.doc(clock()))

    api.add_read_route(app, "/api/v1/backups", backups)

    def hook(doc: api.JSON, _snapshot: object) -> None:
        part = view.status_part(clock())
        doc["backups"] = part["backups"]
        doc.setdefault("findings", []).extend(part["findings"])

    api.add_status_hook(app, hook)
