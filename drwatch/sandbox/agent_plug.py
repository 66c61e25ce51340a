"""The one place the agent is plugged into a simulated host.

`agent_factory(secret, secret_file)` returns the function a `SimHost` calls to build its
agent: the real `drwatch.agent.server.create_app` over the host as `HostFacts`, with the
host's simulated checks (`database` on database hosts) and allow-listed actions. Each
agent speaks protocol v2 as its instance, with its own secret derived from the sandbox's
master secret (the daemon's config says `per_host_secrets = true`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from drwatch.agent.actions import Action, ActionError
from drwatch.agent.checks import Check
from drwatch.agent.config import AgentConfig
from drwatch.agent.server import create_app
from drwatch.agent.wire import CheckResult, derive_host_secret
from drwatch.model.fleet import Role
from drwatch.sandbox.hosts import ACTIONS, SimHost
from drwatch.sandbox.pgcluster import PgError
from drwatch.sandbox.pgworld import Databases, SimulatedDatabases

# Below the sandbox daemon's agent timeout (500 ms), as docs/agent.md asks.
CHECK_TIMEOUT_S = 0.3


class DatabaseCheck:
    """The database's role, replication lag and integrity (docs/sandbox.md): simulated,
    or read from the host's real PostgreSQL (`Options.postgres`). This is the seam the
    agent's own `postgres` check replaces when it lands."""

    kind = "database"

    def __init__(self, host: SimHost, databases: Databases) -> None:
        self._host = host
        self._databases = databases

    async def run(self) -> CheckResult:
        return self._databases.check_result(self._host)


class PromoteAction:
    """`promote`: the real server's `pg_promote` when there is one, then the host's role."""

    def __init__(self, host: SimHost, databases: Databases) -> None:
        self._host = host
        self._databases = databases

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        try:
            previous = await asyncio.to_thread(self._databases.promote, self._host)
            result = self._host.act("promote", params)
        except (ValueError, PgError) as err:
            raise ActionError(str(err), status=400) from None
        return {**result, "previous_role": previous} if previous else result


class HostAction:
    """One of the host's allow-listed actions, as the agent's `Action` protocol wants it."""

    def __init__(self, host: SimHost, name: str) -> None:
        self._host = host
        self._name = name

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        try:
            return self._host.act(self._name, params)
        except ValueError as err:
            raise ActionError(str(err), status=400) from None


def agent_factory(
    secret: bytes, secret_file: Path, databases: Databases | None = None
) -> Callable[[SimHost], web.Application]:
    """`secret` is the master secret in `secret_file`; each host's agent gets its own."""
    dbs = databases if databases is not None else SimulatedDatabases()

    def build(host: SimHost) -> web.Application:
        cfg = AgentConfig(
            secret_file=secret_file, check_timeout=CHECK_TIMEOUT_S, instance_id=host.instance_id
        )
        checks: dict[str, Check] = {}
        if host.role is Role.DATABASE:
            checks["database"] = DatabaseCheck(host, dbs)
        actions: dict[str, Action] = {name: HostAction(host, name) for name in ACTIONS}
        actions["promote"] = PromoteAction(host, dbs)
        key = derive_host_secret(secret, host.instance_id)
        return create_app(
            cfg, host, checks, actions, secret=key, hostname=host.name, instance_id=host.instance_id
        )

    return build
