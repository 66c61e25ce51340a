"""The one place the agent is plugged into a simulated host.

`agent_factory(secret, secret_file)` returns the function a `SimHost` calls to build its
agent: the real `drwatch.agent.server.create_app` over the host as `HostFacts`, with the
host's simulated checks (`database` on database hosts) and allow-listed actions. Each
agent speaks protocol v2 as its instance, with its own secret derived from the sandbox's
master secret (the daemon's config says `per_host_secrets = true`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from drwatch.agent.actions import Action, ActionError
from drwatch.agent.backup import BackupAction, SourceMaker, UploadSettings
from drwatch.agent.checks import Check
from drwatch.agent.config import AgentConfig
from drwatch.agent.restore import LocalDatabase, Restorer
from drwatch.agent.server import create_app
from drwatch.agent.wire import RESTORE_STATUS_ACTION, CheckResult, derive_host_secret
from drwatch.backup.dump import PgEndpoint, replica_dump
from drwatch.backup.errors import BackupError
from drwatch.backup.pipeline import command_stream
from drwatch.backup.source import Source
from drwatch.model.fleet import Role
from drwatch.sandbox.backups import ARCHIVED, simulated_dump
from drwatch.sandbox.hosts import ACTIONS, SimHost
from drwatch.sandbox.pgcluster import PG_BIN, PgCluster, PgError
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


MAX_FREEZE_S = 10.0


class SandboxFreezer:
    """`freeze` and `thaw` on a sandbox database host. The sandbox takes its snapshot
    copies with pg_basebackup (consistent by itself), so the freeze here is a CHECKPOINT
    on the real server (when there is one) and the window's measurement; the agent's own
    Freezer (drwatch.agent.pgactions: pg_backup_start, fsfreeze) is what a real host runs.
    A freeze older than MAX_FREEZE_S counts as thawed by itself, as the agent's would."""

    def __init__(self, host: SimHost, databases: Databases) -> None:
        self._host = host
        self._databases = databases
        self._since: float | None = None

    async def freeze(self, params: dict[str, str]) -> dict[str, object]:
        port = self._databases.dump_port(self._host)
        if port is not None:
            try:
                await asyncio.to_thread(PgCluster(Path("/"), port).sql, "CHECKPOINT", timeout_s=5)
            except PgError as err:
                raise ActionError(f"freeze failed: {err}") from None
        already = self._since is not None and time.monotonic() - self._since < MAX_FREEZE_S
        if not already:
            self._since = time.monotonic()
        return {"frozen": True, "already_frozen": already, "label": params.get("label", "")}

    async def thaw(self, params: dict[str, str]) -> dict[str, object]:
        del params  # thaw takes none
        since, self._since = self._since, None
        if since is None:
            return {"frozen": False, "was_frozen": False}
        held = time.monotonic() - since
        return {
            "frozen": False,
            "was_frozen": True,
            "frozen_s": round(min(held, MAX_FREEZE_S), 6),
            "auto_thawed": held >= MAX_FREEZE_S,
        }


def backup_sources(host: SimHost, databases: Databases, root: Path) -> dict[str, SourceMaker]:
    """What a host backs up: a database host its dump (refused on the primary), the
    others the archive of their configuration directory."""
    if host.role is Role.DATABASE:

        async def dump() -> Source:
            port = databases.dump_port(host)
            if port is not None:
                return await replica_dump(PgEndpoint("127.0.0.1", port))
            role = databases.check_result(host).data.get("role")
            if role != "replica":
                raise BackupError(
                    f"{host.name} is the {role or 'unknown role'}: dumps run on a replica"
                )
            return Source(simulated_dump(host.name), {"host": host.name, "role": "replica",
                          "simulated": "true"}, {"time": str(time.time())})  # fmt: skip

        return {"dump": dump}
    etc = root / host.name / ARCHIVED
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "app.conf").write_text(f"# {host.name}\nrole = {host.role.value}\n")

    async def archive() -> Source:
        argv = ["tar", "-C", str(root / host.name), "-czf", "-", ARCHIVED]
        return Source(command_stream(argv), {"host": host.name, "paths": "/" + ARCHIVED},
                      {"time": str(time.time())})  # fmt: skip

    return {"config_archive": archive}


def restorer_for(host: SimHost, databases: Databases) -> Restorer:
    """The agent's dump restore into the server on the host's data, while it runs (the
    real agent's, drwatch.agent.restore, pointed at the sandbox's loopback server)."""

    def target() -> LocalDatabase | None:
        port = databases.dump_port(host)
        return LocalDatabase("127.0.0.1", port, bin_dir=PG_BIN) if port is not None else None

    return Restorer(target)


def agent_factory(
    secret: bytes,
    secret_file: Path,
    databases: Databases | None = None,
    backups: Callable[[], UploadSettings | None] | None = None,
    host_root: Path | None = None,
) -> Callable[[SimHost], web.Application]:
    """`secret` is the master secret in `secret_file`; each host's agent gets its own.
    With `backups`, each agent has the `backup` action (and database hosts `freeze` and
    `thaw`); `host_root` holds each simulated host's files."""
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
        restorer = restorer_for(host, dbs) if host.role is Role.DATABASE else None
        if restorer is not None:
            actions[RESTORE_STATUS_ACTION] = restorer.status
        settings = backups() if backups is not None else None
        if settings is not None and host_root is not None:
            actions["backup"] = BackupAction(settings, backup_sources(host, dbs, host_root))
            if host.role is Role.DATABASE:
                freezer = SandboxFreezer(host, dbs)
                actions.update(freeze=freezer.freeze, thaw=freezer.thaw)
        key = derive_host_secret(secret, host.instance_id)
        return create_app(
            cfg,
            host,
            checks,
            actions,
            secret=key,
            hostname=host.name,
            instance_id=host.instance_id,
            restorer=restorer,
        )

    return build
