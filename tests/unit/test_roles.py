"""Database roles: what the agent reports, and the memory of it kept in the store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from drwatch.incidents import IncidentStore
from drwatch.model import Health, Layer
from drwatch.roles import RoleMemory, reported_role
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
