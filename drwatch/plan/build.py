"""Build the DR plan from the config and, when given, the daemon's live state. Pure.

Every sentence is generated from what drwatch knows, never kept by hand: the
objectives, the groups and where they run, the data classes, the playbooks and their
steps (from the playbook registry itself), the gates that need approval and whom to
ask, readiness findings and the drill ledger. A part without data says what is
missing and why; a part that is not met is a `Note("unmet")`, which `--check` counts.

Each section has a module of its own: `about` (summary, objectives, contacts),
`services`, `data` (classes and backups), `keys` (key custody), `scenarios`,
`readiness` and `drills`; `inputs` holds what they read besides the config, `words`
how they write times.
"""

from __future__ import annotations

from drwatch.config import Config
from drwatch.plan.about import contacts_section, objectives_section, summary_section
from drwatch.plan.data import data_section
from drwatch.plan.document import Plan
from drwatch.plan.drills import drills_section
from drwatch.plan.inputs import Drills, Live
from drwatch.plan.keys import keys_section
from drwatch.plan.readiness import readiness_section
from drwatch.plan.scenarios import scenarios_section
from drwatch.plan.services import services_section
from drwatch.plan.words import dur, when

__all__ = ["Drills", "Live", "build_plan", "dur", "when"]


def build_plan(cfg: Config, live: Live, drills: Drills, now: float) -> Plan:
    sections = (
        summary_section(cfg, live),
        objectives_section(cfg),
        contacts_section(cfg),
        services_section(cfg, live),
        data_section(cfg, live, now),
        keys_section(cfg, live),
        scenarios_section(cfg),
        readiness_section(live),
        drills_section(cfg, drills, now),
    )
    source = f"config, live state from {live.api}" if live.status else "config only"
    return Plan(cfg.plan.title, now, source, sections)
