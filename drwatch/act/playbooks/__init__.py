"""The recovery playbooks, by their contract names (DESIGN.md)."""

from __future__ import annotations

from drwatch.act.base import Playbook
from drwatch.act.playbooks import app_server, database, load_balancer, region
from drwatch.model.plan import PlaybookName


def all_playbooks() -> dict[PlaybookName, Playbook]:
    """The explicit registry the composition root hands to the Runner."""
    books = (
        app_server.PLAYBOOK,
        load_balancer.FAILOVER_EIP,
        load_balancer.REPLACE,
        database.PLAYBOOK,
        region.PLAYBOOK,
    )
    return {b.name: b for b in books}
