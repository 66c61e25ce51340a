"""The drills section: which drills are due and the ledger's drills."""

from __future__ import annotations

from drwatch.config import Config
from drwatch.ledger import DrillRecord, drill_status
from drwatch.plan.document import Block, Note, Para, Section, Table
from drwatch.plan.inputs import Drills
from drwatch.plan.words import dur, when


def _drill_row(r: DrillRecord) -> tuple[str, ...]:
    rto = f"{dur(r.recovery_s)} / {dur(r.rto_s)}"
    rpo = f"{dur(r.data_loss_s)} / {dur(r.rpo_s)}"
    return (when(r.started_at), r.kind, r.scenario, r.result, dur(r.detection_s), rto, rpo)


def drills_section(cfg: Config, drills: Drills, now: float) -> Section:
    obj = cfg.objectives
    if drills.error:
        return Section(
            "drills",
            "Drills",
            (Note("unmet", f"The drill ledger could not be read: {drills.error}."),),
        )
    blocks: list[Block] = []
    for due in drill_status(drills.latest, obj.drill_kinds, obj.drill_interval, now):
        blocks.append(Note("unmet" if due.overdue else "ok", due.describe(now)))
    if drills.records:
        blocks.append(
            Table(
                (
                    "when",
                    "kind",
                    "scenario",
                    "result",
                    "detection",
                    "recovery / RTO",
                    "data loss / RPO",
                ),
                tuple(_drill_row(r) for r in drills.records),
            )
        )
    else:
        blocks.append(Para("No drill has been recorded yet."))
    return Section("drills", "Drills", tuple(blocks))
