"""Database roles as the agents report them, and the memory of them that outlives a host.

A database's agent says, in its `postgres` check (the sandbox's simulated one is kind
`database`), whether the instance is the primary or a replica. That report decides;
the `drwatch:db-role` tag is a fallback only, for databases without such a check. A
database with neither, never heard from, has an unknown role (`role_of` returns "").

When the host dies its agent goes silent, and with it the only word on what it was: a
lost replica must never be recovered as the primary (that would promote the wrong copy
of the data). `RoleMemory` keeps the last word for each instance and, given a store,
keeps it across restarts of drwatch too, so a primary and a replica lost while drwatch
itself was down are still told apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from drwatch.model.fleet import DB_ROLE_TAG, Role
from drwatch.model.observation import Layer
from drwatch.model.snapshot import Snapshot

# What an agent (or a `drwatch:db-role` tag) may call a database that is not the primary.
REPLICA_ROLES = frozenset({"replica", "standby", "secondary"})
# Agent check kinds that report a database's role, best first: the agent's built-in
# PostgreSQL check, then the sandbox's simulated database.
ROLE_CHECK_KINDS = ("postgres", "database")


def database_check(snapshot: Snapshot, instance_id: str) -> Mapping[str, Any] | None:
    """The agent's database check (kind `postgres`, else `database`) from the instance's
    latest facts; None when its agent has none."""
    agent = snapshot.get(instance_id, Layer.AGENT)
    checks = agent.detail.get("checks") if agent is not None else None
    if not isinstance(checks, Mapping):
        return None
    found = [c for c in checks.values() if isinstance(c, Mapping)]
    for kind in ROLE_CHECK_KINDS:
        for check in found:
            if check.get("kind") == kind:
                return check
    return None


def reported_role(snapshot: Snapshot, instance_id: str) -> str:
    """The role the instance's agent reports now (docs/agent.md: checks.*.data.role),
    lower-cased; "" when the agent says nothing about it."""
    check = database_check(snapshot, instance_id)
    data = check.get("data") if check is not None else None
    role = data.get("role") if isinstance(data, Mapping) else None
    return str(role).lower() if role is not None else ""


def normal_role(raw: str) -> str:
    """ "primary" or "replica" ("standby" and "secondary" are replicas); "" for nothing."""
    raw = raw.strip().lower()
    if not raw:
        return ""
    return "replica" if raw in REPLICA_ROLES else "primary"


class Tagged(Protocol):
    """An instance as the fleet or the provider describes it: an id and tags."""

    @property
    def id(self) -> str: ...
    def tag(self, key: str) -> str | None: ...


def role_of(
    instance: Tagged, snapshot: Snapshot, remembered: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(role, source) of a database: what its agent's check reports now ("agent"), else
    what it last reported ("remembered"), else its `drwatch:db-role` tag ("tag"); the
    role is "primary" or "replica", or ("", "") when nothing says (unknown)."""
    for source, raw in (
        ("agent", reported_role(snapshot, instance.id)),
        ("remembered", (remembered or {}).get(instance.id, "")),
        ("tag", instance.tag(DB_ROLE_TAG) or ""),
    ):
        role = normal_role(raw)
        if role:
            return role, source
    return "", ""


class RoleStore(Protocol):
    """Where remembered roles are kept (the incident store's `db_roles` table)."""

    def db_roles(self) -> dict[str, str]: ...
    def remember_db_roles(self, roles: Mapping[str, str]) -> None: ...


class RoleMemory:
    """The database role each instance's agent last reported, by instance id. Fed from
    every snapshot while the hosts answer; written through to `store` when a role is new
    or changed (a promotion), so the memory survives a restart of drwatch."""

    def __init__(self, store: RoleStore | None = None) -> None:
        self._store = store
        self._roles: dict[str, str] = store.db_roles() if store is not None else {}

    def observe(self, snapshot: Snapshot) -> None:
        changed: dict[str, str] = {}
        for inst in snapshot.fleet:
            if inst.role is not Role.DATABASE:
                continue
            role = reported_role(snapshot, inst.id)
            if role and self._roles.get(inst.id) != role:
                changed[inst.id] = role
        if changed:
            self._roles.update(changed)
            if self._store is not None:
                self._store.remember_db_roles(changed)

    def role(self, instance_id: str) -> str | None:
        return self._roles.get(instance_id)

    def known(self) -> Mapping[str, str]:
        """Every remembered role (read-only view)."""
        return MappingProxyType(self._roles)
