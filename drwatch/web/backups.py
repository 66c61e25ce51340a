"""`GET /api/v1/backups`: the catalogue and the RPO of every class at every location.

Registered only when backups are configured; reads the same token rule as the other
read endpoints (drwatch.web.api). The body is `BackupService.doc(now)`; docs/api.md
and docs/backups.md describe it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from drwatch.web import api


class BackupView(Protocol):
    def doc(self, now: float) -> dict[str, Any]: ...


def add_routes(
    app: web.Application, view: BackupView, clock: Callable[[], float] = time.time
) -> None:
    async def backups(_request: web.Request) -> web.Response:
        return web.json_response(view.doc(clock()))

    api.add_read_route(app, "/api/v1/backups", backups)
