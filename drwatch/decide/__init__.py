"""Pure decisions: which playbook for an incident, and the gates that may hold it."""

from drwatch.decide.gates import GATES, Decision, GateInput, decide, utc_hm
from drwatch.decide.playbooks import is_primary, plans_for

__all__ = [
    "GATES",
    "Decision",
    "GateInput",
    "decide",
    "is_primary",
    "plans_for",
    "utc_hm",
]
