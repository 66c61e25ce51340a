"""Built-in database actions: promote, follow, freeze and thaw (see docs/agent.md).

Each is idempotent (asked twice, the second call finds the work done and says so),
takes only declared parameters, validated, and never a shell. They run on the
agent's `Postgres`; `database_actions(pg)` gives the ones `[postgres] actions` enables.

The freeze is held by the agent, not by the caller: a non-exclusive backup
(`pg_backup_start`) in a session the agent keeps open, plus an optional filesystem
freeze of the data mount. The agent thaws by itself `max_freeze` after the freeze even
when nobody calls `thaw` (the caller died mid-snapshot), and when it stops.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from drwatch.agent.actions import Action, ActionError, check_params
from drwatch.agent.postgres import DatabaseError, Postgres, describe_error
from drwatch.logs import get_logger
from drwatch.units import format_duration

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_FREEZE_APP = "freeze"
log = get_logger(component="agent.postgres")

TIMELINE = "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


def unreachable(err: DatabaseError) -> ActionError:
    return ActionError(f"database unreachable: {err}", status=503)


# --- promote ---------------------------------------------------------------------------------


class Promote:
    """`pg_promote(wait => true)`. Already a primary: success, `promoted` false."""

    def __init__(self, pg: Postgres) -> None:
        self._pg = pg

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        check_params(params, frozenset())
        cfg = self._pg.cfg
        try:
            if not await self._in_recovery():
                return {**await self._primary(), "previous_role": "primary", "promoted": False}
            wait_s = max(1, int(cfg.promote_timeout))
            row = await self._pg.fetchrow_alone(
                "SELECT pg_promote(wait => true, wait_seconds => $1) AS done",
                cfg.promote_timeout + cfg.connect_timeout,
                wait_s,
            )
            if not row.get("done"):
                raise ActionError(f"promotion did not finish within {wait_s}s")
            return {**await self._primary(), "previous_role": "replica", "promoted": True}
        except DatabaseError as err:
            raise unreachable(err) from None

    async def _in_recovery(self) -> bool:
        row = await self._pg.fetchrow(
            "SELECT pg_is_in_recovery() AS r", self._pg.cfg.connect_timeout
        )
        return bool(row["r"])

    async def _primary(self) -> dict[str, object]:
        row = await self._pg.fetchrow(f"SELECT {TIMELINE} AS t", self._pg.cfg.connect_timeout)
        return {"role": "primary", "timeline": int(row["t"])}


# --- follow ----------------------------------------------------------------------------------


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq `key=value` pairs; values may be single-quoted, with backslash escapes."""
    out: dict[str, str] = {}
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        eq = text.index("=", pos)
        key = text[pos:eq].strip()
        pos = eq + 1
        while pos < n and text[pos].isspace():
            pos += 1
        value, pos = _conninfo_value(text, pos)
        out[key] = value
    return out


def _conninfo_value(text: str, pos: int) -> tuple[str, int]:
    quoted = pos < len(text) and text[pos] == "'"
    pos += 1 if quoted else 0
    chars: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch.isspace()):
            return "".join(chars), pos + 1
        chars.append(ch)
        pos += 1
    if quoted:
        raise ValueError("unterminated quote in primary_conninfo")
    return "".join(chars), pos


def format_conninfo(pairs: Mapping[str, str]) -> str:
    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quote(value)}" for key, value in pairs.items())


def sql_literal(text: str) -> str:
    """A standard SQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def follow_params(params: Mapping[str, str]) -> tuple[str, int]:
    check_params(params, frozenset({"host", "port"}))
    host, port = params.get("host", ""), params.get("port", "")
    if not _HOST.match(host):
        raise ActionError(f"host: {host[:64]!r} is not a host name or address", status=400)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ActionError(f"port: {port[:16]!r} is not a port number", status=400)
    return host, int(port)


RECEIVER_QUERY = """
SELECT coalesce(r.status, 'stopped') AS status, coalesce(r.sender_host, '') AS host,
       coalesce(r.sender_port, 0) AS port,
       coalesce(r.received_tli, (SELECT timeline_id FROM pg_control_checkpoint())) AS timeline
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""


class Follow:
    """Point this replica at a new primary (`host`, `port`): check the new primary is a
    primary of the same cluster, rewrite the host and port of `primary_conninfo` (the rest,
    the user and passfile, stays), reload, and wait until the replica streams from it."""

    def __init__(self, pg: Postgres) -> None:
        self._pg = pg

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        host, port = follow_params(params)
        try:
            return await self._follow(host, port)
        except DatabaseError as err:
            raise unreachable(err) from None

    async def _follow(self, host: str, port: int) -> dict[str, object]:
        pg, within = self._pg, self._pg.cfg.connect_timeout
        state = await pg.fetchrow(
            "SELECT pg_is_in_recovery() AS r, current_setting('primary_conninfo') AS conninfo, "
            "(SELECT system_identifier FROM pg_control_system())::text AS sysid",
            within,
        )
        if not state["r"]:
            raise ActionError("this server is a primary: it cannot follow another", status=409)
        await self._check_new_primary(host, port, str(state["sysid"]))
        pairs = parse_conninfo(str(state["conninfo"]))
        previous = f"{pairs.get('host', '')}:{pairs.get('port', '')}"
        changed = (pairs.get("host"), pairs.get("port")) != (host, str(port))
        if changed:
            pairs.update(host=host, port=str(port))
            literal = sql_literal(format_conninfo(pairs))
            await pg.fetch(f"ALTER SYSTEM SET primary_conninfo = {literal}", within)
            await pg.fetch("SELECT pg_reload_conf()", within)
        receiver = await self._wait_streaming(host, port)
        return {
            "role": "replica",
            "upstream": f"{host}:{port}",
            "previous_upstream": previous,
            "changed": changed,
            "streaming": True,
            "timeline": int(receiver["timeline"] or 0),
        }

    async def _check_new_primary(self, host: str, port: int, sysid: str) -> None:
        """Refuse a new primary that is a replica, or a primary of another cluster."""
        query = (
            "SELECT pg_is_in_recovery() AS r, "
            "(SELECT system_identifier FROM pg_control_system())::text AS sysid"
        )
        row = await self._pg.fetch_from(host, port, query)
        if row["r"]:
            raise ActionError(f"{host}:{port} is not a primary (still in recovery)", status=409)
        if row["sysid"] != sysid:
            raise ActionError(
                f"{host}:{port} is another cluster (system identifier {row['sysid']}, "
                f"ours {sysid}): refusing to follow it",
                status=409,
            )

    async def _wait_streaming(self, host: str, port: int) -> Mapping[str, Any]:
        timeout = self._pg.cfg.follow_timeout
        last: Mapping[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self._pg.fetchrow(RECEIVER_QUERY, self._pg.cfg.connect_timeout)
                    if (last["status"], last["host"], last["port"]) == ("streaming", host, port):
                        return last
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise ActionError(
                f"primary_conninfo points at {host}:{port}, but the replica is not streaming "
                f"from it after {format_duration(timeout)} (WAL receiver: "
                f"{last.get('status', 'unknown')}, from {last.get('host')}:{last.get('port')})"
            ) from None


# --- freeze / thaw ---------------------------------------------------------------------------


@dataclass
class _Frozen:
    conn: asyncpg.Connection
    label: str
    started: float  # monotonic
    started_at: float  # epoch
    start_lsn: str
    fs_frozen_at: float | None
    auto_thaw: asyncio.Task[None] | None = None


class Freezer:
    """The agent's one freeze. `freeze` and `thaw` are the actions; the auto-thaw and
    the agent's shutdown call `thaw` too, so every path ends the backup and unfreezes."""

    def __init__(self, pg: Postgres) -> None:
        self._pg = pg
        self._lock = asyncio.Lock()
        self._frozen: _Frozen | None = None
        self.last: dict[str, object] = {}
        pg.extra["frozen"] = False
        pg.on_close(self.close)

    async def freeze(self, params: dict[str, str]) -> dict[str, object]:
        check_params(params, frozenset({"label"}))
        label = params.get("label", "drwatch-snapshot")
        if not _LABEL.match(label):
            raise ActionError(f"label: {label[:64]!r} is not [A-Za-z0-9_.:-]{{1,100}}", status=400)
        async with self._lock:
            if self._frozen is not None:
                return {**self._state(self._frozen), "already_frozen": True}
            self._frozen = await self._start(label)
            frozen = self._frozen
            frozen.auto_thaw = self._pg.spawn(self._auto_thaw(frozen), "auto-thaw")
            self._pg.extra.update(frozen=True, frozen_since=frozen.started_at)
            log.info("postgres.frozen", label=label, start_lsn=frozen.start_lsn)
            return {**self._state(frozen), "already_frozen": False}

    async def thaw(self, params: dict[str, str]) -> dict[str, object]:
        check_params(params, frozenset())
        return await self._thaw(auto=False)

    async def close(self) -> None:
        """The agent stops: thaw whatever is frozen."""
        await self._thaw(auto=False)

    def _state(self, frozen: _Frozen) -> dict[str, object]:
        return {
            "frozen": True,
            "label": frozen.label,
            "start_lsn": frozen.start_lsn,
            "frozen_since": frozen.started_at,
            "fs_frozen": frozen.fs_frozen_at is not None,
            "thaw_within_s": max(0.0, self._pg.cfg.max_freeze - self._age(frozen)),
        }

    @staticmethod
    def _age(frozen: _Frozen) -> float:
        return time.monotonic() - frozen.started

    async def _start(self, label: str) -> _Frozen:
        cfg = self._pg.cfg
        try:
            conn = await self._pg.connect(cfg.connect_timeout, purpose=_FREEZE_APP)
        except DatabaseError as err:
            raise unreachable(err) from None
        started, started_at = time.monotonic(), time.time()
        try:
            async with asyncio.timeout(cfg.max_freeze):
                lsn = await conn.fetchval("SELECT pg_backup_start($1, fast => true)::text", label)
            fs_at = await self._fsfreeze("--freeze") if cfg.fsfreeze_mount else None
        except BaseException as err:  # a cancel too: leave nothing frozen behind
            conn.terminate()  # the session's end ends the backup
            if isinstance(err, TimeoutError):
                raise ActionError(
                    f"pg_backup_start took over {format_duration(cfg.max_freeze)}"
                ) from None
            if isinstance(err, asyncpg.PostgresError | OSError):
                raise ActionError(f"freeze failed: {describe_error(err, cfg)}") from None
            raise
        return _Frozen(conn, label, started, started_at, str(lsn), fs_at)

    async def _auto_thaw(self, frozen: _Frozen) -> None:
        await asyncio.sleep(self._pg.cfg.max_freeze)
        if self._frozen is frozen:
            result = await self._thaw(auto=True)
            log.warning(
                "postgres.auto_thawed",
                label=frozen.label,
                max_freeze=format_duration(self._pg.cfg.max_freeze),
                frozen_s=result.get("frozen_s"),
            )

    async def _thaw(self, *, auto: bool) -> dict[str, object]:
        async with self._lock:
            frozen, self._frozen = self._frozen, None
            if frozen is None:
                return {"frozen": False, "was_frozen": False, "last": dict(self.last)}
            if not auto and frozen.auto_thaw is not None:
                frozen.auto_thaw.cancel()
            result = await asyncio.shield(self._end(frozen, auto))
            self.last = result
            self._pg.extra.update(
                frozen=False, last_freeze_s=result["frozen_s"], last_freeze_auto=auto
            )
            return {"frozen": False, "was_frozen": True, **result}

    async def _end(self, frozen: _Frozen, auto: bool) -> dict[str, Any]:
        """Unfreeze the filesystem first (PostgreSQL must write WAL to stop the backup)."""
        blocked = 0.0
        errors: list[str] = []
        if frozen.fs_frozen_at is not None:
            try:
                await self._fsfreeze("--unfreeze")
            except ActionError as err:
                errors.append(str(err))
            blocked = time.monotonic() - frozen.fs_frozen_at
        stop = await self._backup_stop(frozen.conn, errors)
        return {
            "label": frozen.label,
            "frozen_s": round(self._age(frozen), 6),
            "writes_blocked_s": round(blocked, 6),
            "auto_thawed": auto,
            **stop,
            **({"errors": "; ".join(errors)} if errors else {}),
        }

    async def _backup_stop(self, conn: asyncpg.Connection, errors: list[str]) -> dict[str, object]:
        try:
            async with asyncio.timeout(self._pg.cfg.max_freeze):
                row = await conn.fetchrow(
                    "SELECT lsn::text, labelfile FROM pg_backup_stop(wait_for_archive => false)"
                )
        except Exception as err:  # the session's end ends the backup in any case
            errors.append(f"pg_backup_stop: {describe_error(err, self._pg.cfg)}")
            return {}
        finally:
            conn.terminate()
        return {"stop_lsn": row["lsn"], "backup_label": row["labelfile"]}

    async def _fsfreeze(self, flag: str) -> float:
        """Run `fsfreeze FLAG MOUNT` (no shell); the monotonic time it returned."""
        cfg = self._pg.cfg
        mount = cfg.fsfreeze_mount or Path("/")
        proc = await asyncio.create_subprocess_exec(
            str(cfg.fsfreeze_binary),
            flag,
            str(mount),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(cfg.max_freeze):
            _, err = await proc.communicate()
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip()[-300:]
            raise ActionError(f"fsfreeze {flag} {mount}: exit status {proc.returncode}: {text}")
        return time.monotonic()


def database_actions(pg: Postgres | None) -> dict[str, Action]:
    """The built-in database actions `[postgres] actions` enables, by name. The freezer
    exists (and the check reports `frozen`) only when freeze or thaw is enabled."""
    if pg is None:
        return {}
    enabled = set(pg.cfg.actions)
    actions: dict[str, Action] = {}
    if "promote" in enabled:
        actions["promote"] = Promote(pg)
    if "follow" in enabled:
        actions["follow"] = Follow(pg)
    if enabled & {"freeze", "thaw"}:
        freezer = Freezer(pg)
        actions.update(freeze=freezer.freeze, thaw=freezer.thaw)
    # "restore" is a stream endpoint of its own (drwatch.agent.restore), not an action here.
    return {name: actions[name] for name in pg.cfg.actions if name in actions}
