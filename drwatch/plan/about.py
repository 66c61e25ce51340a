"""The plan's first sections: what the plan is, the objectives, who owns and approves."""

from __future__ import annotations

from collections.abc import Sequence

from drwatch.config import Config, Contact
from drwatch.plan.document import Block, Note, Para, Section, Sub, Table
from drwatch.plan.inputs import Live
from drwatch.plan.words import plain
from drwatch.units import format_duration


def summary_section(cfg: Config, live: Live) -> Section:
    blocks: list[Block] = []
    if cfg.plan.service:
        blocks.append(Para(cfg.plan.service))
    blocks.append(
        Para(
            f"drwatch (watcher {cfg.watcher.name}) runs outside the clouds it watches. It "
            f"checks every server's cloud state, an agent on the server and the application "
            f"itself, decides how wide an outage is, and runs the recovery steps below by "
            f"itself where this plan says so. This document is generated from its "
            f"configuration" + (" and its live state." if live.status else ".")
        )
    )
    if not live.status:
        why = live.error or "no --api URL was given"
        blocks.append(Note("missing", f"Live state is not shown: {why}."))
    return Section("summary", "About this plan", tuple(blocks))


def objectives_section(cfg: Config) -> Section:
    obj = cfg.objectives
    rows = [("overall", format_duration(obj.rpo), format_duration(obj.rto))]
    rows += [
        (name, format_duration(o.rpo), format_duration(o.rto))
        for name, o in sorted(obj.data_classes.items())
    ]
    blocks: list[Block] = [
        Para(
            f"Recovery point objective (RPO) {format_duration(obj.rpo)}: after a disaster we "
            f"accept losing at most the last {plain(obj.rpo)} of data. Recovery time "
            f"objective (RTO) {format_duration(obj.rto)}: the service is back within "
            f"{plain(obj.rto)} of the failure."
        ),
        Table(("applies to", "RPO (data we may lose)", "RTO (time to recover)"), tuple(rows)),
        Para(
            f"The plan is tested at least every {plain(obj.drill_interval)} by a passing "
            f"drill of each kind: {', '.join(obj.drill_kinds)}."
        ),
    ]
    return Section("objectives", "Objectives", tuple(blocks))


_CONTACT_HEADERS = ("name", "role", "email", "phone", "when")


def _contact_table(people: Sequence[Contact]) -> Table:
    """Only the columns someone filled in (a name is always there)."""
    rows = [(c.name, c.role, c.email, c.phone, c.hours) for c in people]
    keep = [i for i in range(len(_CONTACT_HEADERS)) if i == 0 or any(r[i] for r in rows)]
    return Table(
        tuple(_CONTACT_HEADERS[i] for i in keep), tuple(tuple(r[i] for i in keep) for r in rows)
    )


def contacts_section(cfg: Config) -> Section:
    plan = cfg.plan
    blocks: list[Block] = []
    for title, people, missing in (
        ("Owners", plan.owners, "No owners are named: set [[plan.owners]] in the config."),
        (
            "Who approves",
            plan.approvers,
            "No approvers are named: set [[plan.approvers]] in the config.",
        ),
        (
            "Escalation, in this order",
            plan.escalation,
            "No escalation contacts: set [[plan.escalation]] in the config.",
        ),
    ):
        blocks.append(Sub(title))
        if people:
            blocks.append(_contact_table(people))
        else:
            blocks.append(Note("unmet", missing))
    return Section("contacts", "Owners and escalation", tuple(blocks))
