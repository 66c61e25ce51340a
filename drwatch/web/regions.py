"""`region_roles` in GET /api/v1/status: which region serves, which stands by, the DNS
records behind it, and a split when DNS and the primary database disagree."""

from __future__ import annotations

from aiohttp import web

from drwatch.model.snapshot import Snapshot
from drwatch.observe.regions import RegionWatch
from drwatch.web.api import JSON, add_status_hook


def add_routes(app: web.Application, watch: RegionWatch) -> None:
    def hook(doc: JSON, _snapshot: Snapshot | None) -> None:
        doc["region_roles"] = {"configured": watch.configured, **watch.latest.as_dict()}

    add_status_hook(app, hook)
