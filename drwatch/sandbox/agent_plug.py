"""The one place the agent is plugged into a simulated host.

`agent_factory(secret, secret_file)` returns the function a `SimHost` calls to build its
agent: the real `drwatch.agent.server.create_app` over the host as `HostFacts`, with the
host's simulated checks (`database` on database hosts) and allow-listed actions. Each
agent speaks protocol v2 as its instance, with its own secret derived from the sandbox's
master secret (the daemon's config says `per_host_secrets = true`).
"""

from __future__ import annotations

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

# Below the sandbox daemon's agent timeout (500 ms), as docs/agent.md asks.
CHECK_TIMEOUT_S = 0.3


class DatabaseCheck:
    """The simulated database: role, replication lag and integrity (docs/sandbox.md)."""

    kind = "database"

    def __init__(self, host: SimHost) -> None:
        self._host = host

    async def run(self) -> CheckResult:
        return self._host.database_check()


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


def agent_factory(secret: bytes, secret_file: Path) -> Callable[[SimHost], web.Application]:
    """`secret` is the master secret in `secret_file`; each host's agent gets its own."""

    def build(host: SimHost) -> web.Application:
        cfg = AgentConfig(
            secret_file=secret_file, check_timeout=CHECK_TIMEOUT_S, instance_id=host.instance_id
        )
        checks: dict[str, Check] = {}
        if host.role is Role.DATABASE:
            checks["database"] = DatabaseCheck(host)
        actions: dict[str, Action] = {name: HostAction(host, name) for name in ACTIONS}
        key = derive_host_secret(secret, host.instance_id)
        return create_app(
            cfg, host, checks, actions, secret=key, hostname=host.name, instance_id=host.instance_id
        )

    return build
