"""The readiness section: the daemon's findings and open incidents now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from drwatch.plan.document import Block, Note, Para, Section, Table
from drwatch.plan.inputs import Live


def readiness_section(live: Live) -> Section:
    status = live.status
    if not status:
        # Asked and no answer is a failure of its own; not asked is only a gap.
        kind: Literal["missing", "unmet"] = "unmet" if live.error else "missing"
        why = live.error or "no --api URL was given"
        return Section("readiness", "Readiness now", (Note(kind, f"Readiness is unknown: {why}."),))
    findings = [f for f in status.get("findings") or [] if isinstance(f, Mapping)]
    incidents = [i for i in status.get("open_incidents") or [] if isinstance(i, Mapping)]
    blocks: list[Block] = [Para(f"drwatch says: {status.get('summary', '-')}")]
    if findings:
        rows = tuple(
            (str(f.get("severity")), str(f.get("finding")), str(f.get("evidence")))
            for f in findings
        )
        blocks.append(Table(("severity", "finding", "evidence"), rows))
        for f in findings:
            blocks.append(Note("unmet", f"{f.get('finding')}: {f.get('evidence')}"))
    for inc in incidents:
        blocks.append(
            Note("unmet", f"open incident {inc.get('id')}: {inc.get('finding')} {inc.get('state')}")
        )
    if not findings and not incidents:
        blocks.append(Note("ok", "No findings and no open incidents."))
    return Section("readiness", "Readiness now", tuple(blocks))
