"""What the composition root gets: alone, the watcher leads and keeps SQLite; with
[cluster], nothing acts or journals before this watcher has won an election."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drwatch import config
from drwatch.act.journal import Journal
from drwatch.cluster import wiring
from drwatch.cluster.errors import NotLeaderError
from drwatch.cluster.etcd_store import EtcdJournalStore
from drwatch.cluster.leader import Role
from drwatch.cluster.sqlite_store import SqliteJournalStore
from drwatch.incidents import IncidentStore
from drwatch.model.plan import Plan, PlaybookName


def cfg(**extra: Any) -> config.Config:
    return config.parse(
        {
            "watcher": {"name": "alpha"},
            "provider": {"regions": ["us-east-1"]},
            "agent": {"secret_file": "/etc/drwatch/agent-secret"},
            "groups": [
                {"name": "app", "role": "app_server", "select": {"tags": {"drwatch:group": "app"}}}
            ],
            **extra,
        }
    )


PLAN = Plan("inc-1", PlaybookName.APP_REPLACE, "us-east-1", "us-east-1a", "app", ("i-1",))


async def test_alone_the_watcher_leads_and_journals_to_sqlite(tmp_path: Path) -> None:
    journal, incidents = Journal.in_state_dir(tmp_path), IncidentStore(tmp_path)
    shared = wiring.build(cfg(), journal, incidents)
    state = shared.leadership.state
    assert (state.role, state.leader, state.acting) == (Role.LEADER, "alpha", True)
    assert "no [cluster]" in state.reason
    assert isinstance(shared.journal, SqliteJournalStore)
    assert shared.views is None
    await shared.journal.start_run("r1", PLAN, "alpha", 1.0)
    assert journal.run("r1") is not None
    await shared.leadership.run()  # nothing to run alone: returns at once
    await shared.close()
    journal.close()
    incidents.close()


async def test_with_a_cluster_nothing_is_journaled_before_winning(tmp_path: Path) -> None:
    """Built, not yet run (etcd not even dialled): the watcher is `starting`, does not
    act, and its journal refuses to write, naming why."""
    journal, incidents = Journal.in_state_dir(tmp_path), IncidentStore(tmp_path)
    shared = wiring.build(
        cfg(cluster={"name": "alpha-1", "endpoints": ["127.0.0.1:1"]}), journal, incidents
    )
    state = shared.leadership.state
    assert (state.role, state.acting, state.me) == (Role.STARTING, False, "alpha-1")
    assert isinstance(shared.journal, EtcdJournalStore)
    assert shared.views is not None
    with pytest.raises(NotLeaderError, match="starting"):
        await shared.journal.start_run("r1", PLAN, "alpha-1", 1.0)
    await shared.close()
    journal.close()
    incidents.close()
