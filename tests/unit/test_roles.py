"""Database roles: what the agent reports, and the memory of it kept in the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from drwatch.incidents import IncidentStore
from drwatch.model import Health, Layer
from drwatch.roles import RoleMemory, reported_role, role_of
from tests.scenarios.world import World, iid


def _reporting(**roles: str) -> World:
    world = World.healthy()
    for name, role in roles.items():
        facts = {"checks": {"db": {"kind": "database", "data": {"role": role}}}}
        world.layer(name.replace("_", "-"), Layer.AGENT, Health.UP, detail=facts)
    return world


def test_reported_role_is_the_database_check_lower_cased() -> None:
    snap = _reporting(db_1="Primary").snapshot()
    assert reported_role(snap, iid("db-1")) == "primary"
    assert reported_role(snap, iid("db-2")) == ""  # its agent says nothing about a role
    assert reported_role(snap, iid("app-1")) == ""


class CountingStore:
    def __init__(self) -> None:
        self.writes: list[dict[str, str]] = []

    def db_roles(self) -> dict[str, str]:
        return {}

    def remember_db_roles(self, roles: Mapping[str, str]) -> None:
        self.writes.append(dict(roles))


def test_only_new_or_changed_roles_are_written() -> None:
    """Every tick observes; the store is written when a role is first heard or changes."""
    store = CountingStore()
    memory = RoleMemory(store)
    world = _reporting(db_1="primary", db_2="replica")
    memory.observe(world.snapshot())
    memory.observe(world.snapshot())
    promoted = _reporting(db_1="primary", db_2="primary")
    memory.observe(promoted.snapshot())
    assert store.writes == [
        {iid("db-1"): "primary", iid("db-2"): "replica"},
        {iid("db-2"): "primary"},
    ]
    assert memory.role(iid("db-2")) == "primary"


def test_the_memory_outlives_a_restart_and_a_silent_host(tmp_path: Path) -> None:
    first = IncidentStore(tmp_path)
    RoleMemory(first).observe(_reporting(db_1="primary", db_2="replica").snapshot())
    first.close()
    again = RoleMemory(IncidentStore(tmp_path))
    again.observe(World.healthy().stop("db-2").snapshot())  # db-2 silent: nothing new
    assert again.role(iid("db-2")) == "replica"
    assert dict(again.known()) == {iid("db-1"): "primary", iid("db-2"): "replica"}


def test_the_postgres_check_is_read_before_a_simulated_one() -> None:
    """An agent with both kinds: the real `postgres` check's role is the one reported."""
    world = World.healthy()
    facts = {
        "checks": {
            "sim": {"kind": "database", "data": {"role": "primary"}},
            "pg": {"kind": "postgres", "data": {"role": "replica"}},
        }
    }
    world.layer("db-1", Layer.AGENT, Health.UP, detail=facts)
    assert reported_role(world.snapshot(), iid("db-1")) == "replica"


def test_role_of_says_where_the_role_came_from() -> None:
    """Agent now, then remembered, then the tag; standby is a replica; nothing is unknown."""
    world = _reporting(db_1="standby")
    snap = world.snapshot()
    db1, db2 = snap.fleet.get(iid("db-1")), snap.fleet.get(iid("db-2"))
    assert db1 is not None
    assert db2 is not None
    assert role_of(db1, snap) == ("replica", "agent")
    assert role_of(db2, snap, {iid("db-2"): "Primary"}) == ("primary", "remembered")
    assert role_of(db2, snap) == ("replica", "tag")
    untagged = replace(db2, tags=())
    assert role_of(untagged, snap) == ("", "")
