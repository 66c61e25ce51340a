"""The services section: the groups, where they run, and which region serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drwatch.config import Config, GroupConfig
from drwatch.plan.document import Block, Note, Para, Section, Table
from drwatch.plan.inputs import Live


def _group_places(g: GroupConfig, live: Live) -> tuple[str, str, str]:
    """(instances, zones, regions) of a group from the live status, or '-' without it."""
    targets = [t for t in (live.status or {}).get("targets") or [] if t.get("group") == g.name]
    if not live.status:
        return "-", "-", "-"
    names = ", ".join(sorted(str(t.get("name")) for t in targets)) or "none found"
    zones = ", ".join(sorted({str(t.get("zone")) for t in targets})) or "-"
    regions = ", ".join(sorted({str(t.get("region")) for t in targets})) or "-"
    return names, zones, regions


def _live_readiness(live: Live) -> Mapping[str, Any] | None:
    found = (live.status or {}).get("readiness")
    return found if isinstance(found, Mapping) else None


def _regions_para(cfg: Config, live: Live) -> tuple[Para, list[str]]:
    """Which region serves: as the daemon sees it now, else the config's first region."""
    ready = _live_readiness(live)
    if ready is not None and ready.get("serving_region"):
        standby = [str(ready["standby_region"])] if ready.get("standby_region") else []
        detail = (ready.get("regions") or {}).get("detail") or "as drwatch sees it now"
        text = (
            f"Provider: {cfg.provider.kind}. Serving region: {ready['serving_region']} "
            f"({detail}). Standby: {', '.join(standby) or 'none'}."
        )
        return Para(text), standby
    serving, standby = cfg.provider.regions[0], list(cfg.provider.regions[1:])
    text = (
        f"Provider: {cfg.provider.kind}. Serving region: {serving} (the first region "
        f"configured). Standby: {', '.join(standby) or 'none'}."
    )
    return Para(text), standby


def services_section(cfg: Config, live: Live) -> Section:
    rows = []
    for g in cfg.groups:
        names, zones, where = _group_places(g, live)
        size = str(g.size) if g.size is not None else "-"
        rows.append((g.name, g.role.value, size, names, zones, where))
    serving, standby = _regions_para(cfg, live)
    blocks: list[Block] = [
        serving,
        Table(("group", "role", "size", "instances", "zones", "regions"), tuple(rows)),
    ]
    if not standby:
        blocks.append(Note("unmet", "Only one region is configured: a region loss has no standby."))
    ready = _live_readiness(live)
    if ready is not None and ready.get("regional_fallback") is False:
        why = ready.get("fallback") or "unknown"
        blocks.append(Note("unmet", f"The service has no regional fallback now: {why}."))
    if not live.status:
        blocks.append(Note("missing", "Instances, zones and regions need the live state."))
    return Section("services", "Services and where they run", tuple(blocks))
