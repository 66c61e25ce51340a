"""Readiness in GET /api/v1/status: which region serves, whether the service has a
regional fallback right now, and the readiness warnings (in `findings`, like every
other warning). The daemon refreshes `ReadinessState` beside the tick."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from drwatch.assess.readiness import PENDING_RULES, ReadinessReport, regional_fallback
from drwatch.model.findings import Finding
from drwatch.model.snapshot import Snapshot
from drwatch.web.api import add_status_hook, finding_doc

JSON = dict[str, Any]


@dataclass
class ReadinessState:
    report: ReadinessReport = field(default_factory=ReadinessReport)


def lost_regions(findings: list[Any]) -> set[str]:
    """Regions the status's findings call lost as standbys (dr_capacity_lost)."""
    return {
        str(f.get("region"))
        for f in findings
        if isinstance(f, Mapping) and f.get("finding") == Finding.DR_CAPACITY_LOST.value
    }


def readiness_doc(report: ReadinessReport, lost: set[str]) -> JSON:
    regions = report.regions
    fallback, why = regional_fallback(regions, lost)
    return {
        "serving_region": regions.serving,
        "standby_region": regions.standby,
        "regional_fallback": fallback,
        "fallback": why,
        "regions": regions.as_dict(),
        "warnings": len(report.diagnoses),
        "pending": list(PENDING_RULES),
    }


def extend_status(doc: JSON, state: ReadinessState, names: Mapping[str, str]) -> None:
    findings = doc.setdefault("findings", [])
    doc["readiness"] = readiness_doc(state.report, lost_regions(findings))
    findings.extend(finding_doc(d, names) for d in state.report.diagnoses)


def add_routes(app: web.Application, state: ReadinessState) -> None:
    """The readiness part of /api/v1/status."""

    def hook(doc: JSON, snapshot: Snapshot | None) -> None:
        names = {i.id: i.name for i in snapshot.fleet} if snapshot else {}
        extend_status(doc, state, names)

    add_status_hook(app, hook)
