"""The local PostgreSQL server, as the agent sees it: the `postgres` check and its session.

`Postgres` is the one place the agent talks to its database. It is an async context
manager that owns what outlives a request: the check's connection (kept open between
calls, dropped on any error), and background tasks (the amcheck sweep; the auto-thaw
of a freeze, in `drwatch.agent.pgactions`). asyncpg errors are translated here into
`DatabaseError` with a reason an operator can act on.

The check (`kind = "postgres"`) answers from a few catalog queries in one session:
role from `pg_is_in_recovery()`, the timeline and the cluster's system identifier,
lag in seconds and bytes from the receive/replay LSNs and what the sender last said
its WAL end was, the replicas a primary streams to, and integrity (data checksums,
checksum failures, the last amcheck sweep). A database the agent cannot reach is
`unknown` with the reason, never `ok`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from drwatch.agent.config import PostgresCheckConfig, PostgresConfig
from drwatch.agent.wire import CheckResult, Scalar, Status
from drwatch.errors import ConfigError, DrwatchError
from drwatch.logs import get_logger
from drwatch.units import format_duration

MAX_REPLICAS = 16
Verdict = tuple[Status, str]
_CONNECTION_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError)
APPLICATION_NAME = "drwatch-agent"
log = get_logger(component="agent.postgres")


class DatabaseError(DrwatchError):
    """The database could not be reached or did not answer; the message says why."""


def read_password(path: Path | None) -> str | None:
    """The password in `path` (first line), which must be readable by its owner only."""
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path}: cannot read the database password: {err}"]) from None
    if mode & 0o077:
        raise ConfigError([f"{path}: password file is readable by group or others; chmod 600 it"])
    return text.splitlines()[0] if text else ""


_REASONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (TimeoutError, "no answer in time"),
    (FileNotFoundError, "no such socket (is the server running?)"),
    (ConnectionRefusedError, "connection refused (is the server running?)"),
    (asyncpg.ConnectionDoesNotExistError, "the server closed the connection ({err})"),
    (
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError),
        "authentication failed: {err}",
    ),
    (asyncpg.PostgresError, "{kind}: {err}"),
    (
        (asyncpg.InterfaceError, asyncpg.exceptions.ProtocolError),
        "not a PostgreSQL answer ({kind}: {err})",
    ),
    (OSError, "{err}"),
)


def describe_error(err: BaseException, cfg: PostgresConfig) -> str:
    """One line an operator can act on, for any way a connection or query can fail."""
    where = _socket_path(cfg) if cfg.host.startswith("/") else f"{cfg.host}:{cfg.port}"
    text = next((t for kinds, t in _REASONS if isinstance(err, kinds)), "{kind}: {err}")
    detail = err.strerror if isinstance(err, OSError) and err.strerror else err
    return f"{where}: " + text.format(kind=type(err).__name__, err=detail)


@contextlib.asynccontextmanager
async def database(cfg: PostgresConfig | None) -> AsyncIterator[Postgres | None]:
    """The agent's `Postgres` for the whole run, or None when `[postgres]` is not set."""
    if cfg is None:
        yield None
        return
    async with Postgres(cfg) as pg:
        yield pg


def _socket_path(cfg: PostgresConfig) -> str:
    return f"{cfg.host.rstrip('/')}/.s.PGSQL.{cfg.port}"


class Postgres:
    """The agent's link to its local server. Use `async with Postgres(cfg) as pg:`."""

    def __init__(self, cfg: PostgresConfig, *, password: str | None = None) -> None:
        self.cfg = cfg
        self._password = password if password is not None else read_password(cfg.password_file)
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._group: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        # Facts the actions add to the check's data (the freeze: frozen, last window).
        self.extra: dict[str, Scalar] = {}

    async def __aenter__(self) -> Postgres:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop: run the closers (a freeze is thawed), cancel the background, drop sessions."""
        try:
            for close in reversed(self._closers):
                await close()
        finally:
            for task in self._background:
                task.cancel()
            group, self._group = self._group, None
            if group is not None:
                await group.__aexit__(None, None, None)
            await self._drop()

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run `close` when the agent stops, before the background is cancelled."""
        self._closers.append(close)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coro` in the background until it ends or the agent stops."""
        if self._group is None:
            coro.close()
            raise RuntimeError("Postgres is not running: use `async with Postgres(cfg)`")
        task = self._group.create_task(coro, name=f"postgres:{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def connect(self, within: float, *, purpose: str = "") -> asyncpg.Connection:
        """A new connection of its own (a freeze holds one); DatabaseError on failure."""
        cfg = self.cfg
        name = f"{APPLICATION_NAME}-{purpose}" if purpose else APPLICATION_NAME
        try:
            async with asyncio.timeout(within):
                return await asyncpg.connect(
                    host=cfg.host,
                    port=cfg.port,
                    user=cfg.user,
                    database=cfg.database,
                    password=self._password,
                    timeout=within,
                    command_timeout=None,
                    ssl=False,
                    server_settings={"application_name": name},
                )
        except Exception as err:  # every library failure becomes one reason
            raise DatabaseError(describe_error(err, cfg)) from None

    async def fetchrow(self, query: str, within: float, *args: object) -> Mapping[str, Any]:
        """One row from the shared session; DatabaseError with the reason otherwise."""
        rows = await self.fetch(query, within, *args)
        return rows[0] if rows else {}

    async def fetch(self, query: str, within: float, *args: object) -> list[Mapping[str, Any]]:
        """Rows from the shared session, kept open between calls. A session the server
        dropped since the last call (a restart) is reopened once, inside the deadline."""
        try:
            async with asyncio.timeout(within), self._lock:
                for _ in range(2):
                    reused = self._conn is not None and not self._conn.is_closed()
                    try:
                        return await self._fetch(query, within, *args)
                    except _CONNECTION_LOST:
                        if not reused:
                            raise
                raise ConnectionResetError("the server closed the session twice")
        except DatabaseError:
            raise
        except Exception as err:
            raise DatabaseError(describe_error(err, self.cfg)) from None

    async def fetchrow_alone(self, query: str, within: float, *args: object) -> Mapping[str, Any]:
        """One row on a connection of its own, closed after: for a long statement (a
        promotion) that must not hold the check's session."""
        conn = await self.connect(self.cfg.connect_timeout, purpose="action")
        try:
            async with asyncio.timeout(within):
                row = await conn.fetchrow(query, *args)
        except Exception as err:
            raise DatabaseError(describe_error(err, self.cfg)) from None
        finally:
            conn.terminate()
        return dict(row) if row is not None else {}

    async def fetch_from(self, host: str, port: int, query: str) -> Mapping[str, Any]:
        """One row from another server (a new primary), with this agent's credentials, on a
        connection of its own that is closed after; DatabaseError with the reason."""
        cfg, within = self.cfg, self.cfg.connect_timeout
        conn = None
        try:
            async with asyncio.timeout(within):
                conn = await asyncpg.connect(
                    host=host,
                    port=port,
                    user=cfg.user,
                    database=cfg.database,
                    password=self._password,
                    timeout=within,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                row = await conn.fetchrow(query)
        except Exception as err:
            remote = cfg.model_copy(update={"host": host, "port": port})
            raise DatabaseError(describe_error(err, remote)) from None
        finally:
            if conn is not None:
                conn.terminate()
        return dict(row) if row is not None else {}

    async def _fetch(self, query: str, within: float, *args: object) -> list[Mapping[str, Any]]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.connect(within)
        try:
            rows = await self._conn.fetch(query, *args)
        except BaseException:  # an error or a cancel: the next call starts clean
            await self._drop()
            raise
        return [dict(r) for r in rows]

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no round trip: the server may be the thing that hangs


# --- the check -------------------------------------------------------------------------------

STATE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       current_setting('data_checksums') = 'on' AS data_checksums,
       (SELECT coalesce(sum(checksum_failures), 0) FROM pg_stat_database)::bigint
           AS checksum_failures,
       (SELECT extract(epoch FROM max(checksum_last_failure)) FROM pg_stat_database)::float8
           AS checksum_last_failure,
       pg_has_role('pg_read_all_stats', 'USAGE') AS sees_replication
"""
PRIMARY_QUERY = """
SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_position
"""
REPLICAS_QUERY = """
SELECT coalesce(application_name, '') AS name, coalesce(client_addr::text, 'local') AS address,
       coalesce(state, '') AS state,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint AS lag_bytes,
       coalesce(extract(epoch FROM replay_lag), 0)::float8 AS lag_s
FROM pg_stat_replication ORDER BY application_name, client_addr LIMIT $1
"""
REPLICA_QUERY = """
SELECT coalesce(r.status, 'stopped') AS receiver,
       coalesce(r.sender_host, '') AS sender_host, coalesce(r.sender_port, 0) AS sender_port,
       coalesce(r.received_tli, (SELECT timeline_id FROM pg_control_checkpoint())) AS timeline,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive_position,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_position,
       pg_wal_lsn_diff(r.latest_end_lsn, '0/0')::bigint AS sender_position,
       extract(epoch FROM now() - coalesce(pg_last_xact_replay_timestamp(),
                                            pg_postmaster_start_time()))::float8 AS replay_age_s,
       extract(epoch FROM now() - r.last_msg_receipt_time)::float8 AS last_message_age_s
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""


@dataclass(frozen=True, slots=True)
class SweepResult:
    """The last amcheck sweep: `result` is ok | corrupt | error | unavailable."""

    result: str
    at: float
    indexes: int
    detail: str = ""
    # Where the next sweep starts (index OIDs above this): a database with more indexes
    # than one sweep may check is covered over several sweeps, round and round.
    next_oid: int = 0


def replica_lag(row: Mapping[str, Any]) -> tuple[float, int]:
    """(seconds, bytes) a replica's replay is behind what its primary last said it had.

    The last-replayed-transaction timestamp alone lies on an idle primary (nothing new
    to replay, yet "now - timestamp" grows): when replay has reached the sender's WAL
    end, the lag is 0 whatever that timestamp says. Behind it, the lag is the age of the
    last replayed commit (the server's start when none was replayed since).
    """
    replay = row.get("replay_position")
    ahead = [p for p in (row.get("sender_position"), row.get("receive_position")) if p is not None]
    if replay is None or not ahead:
        return 0.0, 0
    lag_bytes = max(0, max(ahead) - replay)
    if lag_bytes == 0:
        return 0.0, 0
    return max(0.0, float(row.get("replay_age_s") or 0.0)), lag_bytes


class PostgresCheck:
    """The `postgres` check. Fast catalog queries only; amcheck runs in the background."""

    kind = "postgres"

    def __init__(self, cfg: PostgresCheckConfig, pg: Postgres, timeout: float) -> None:
        self._cfg = cfg
        self._pg = pg
        # Our own deadline, a little inside the agent's, so the reason is ours.
        self._timeout = max(0.05, min(pg.cfg.connect_timeout, timeout) * 0.9)
        self._seen_failures: int | None = None
        self.sweep = SweepResult("never", 0.0, 0)

    def start(self) -> None:
        """Start the background amcheck sweep when the config asks for one."""
        if self._cfg.amcheck_interval:
            self._pg.spawn(self._sweep_forever(), "amcheck")

    async def run(self) -> CheckResult:
        try:
            state = await self._pg.fetchrow(STATE_QUERY, self._timeout)
            if state["in_recovery"]:
                data = await self._replica_facts()
            else:
                data = await self._primary_facts()
        except DatabaseError as err:
            return self._result(Status.UNKNOWN, f"database unreachable: {err}", {})
        data = {**self._identity(state), **data, **self._integrity(state), **self._pg.extra}
        status, detail = self._verdict(data)
        return self._result(status, detail, data)

    def _result(self, status: Status, detail: str, data: Mapping[str, Scalar]) -> CheckResult:
        return CheckResult(self._cfg.name, self.kind, status, detail, data)

    @staticmethod
    def _identity(state: Mapping[str, Any]) -> dict[str, Scalar]:
        return {
            "role": "replica" if state["in_recovery"] else "primary",
            "system_identifier": str(state["system_identifier"]),
            "sees_replication": bool(state["sees_replication"]),
        }

    async def _primary_facts(self) -> dict[str, Scalar]:
        row = await self._pg.fetchrow(PRIMARY_QUERY, self._timeout)
        reps = await self._pg.fetch(REPLICAS_QUERY, self._timeout, MAX_REPLICAS)
        data: dict[str, Scalar] = {
            "timeline": int(row["timeline"]),
            "wal_position": int(row["wal_position"]),
            "lag_s": 0.0,
            "lag_bytes": 0,
            "replicas": len(reps),
            "replicas_streaming": sum(1 for r in reps if r["state"] == "streaming"),
        }
        for r in reps:
            key = f"replica.{r['name'] or r['address']}"
            data[f"{key}.state"] = str(r["state"])
            data[f"{key}.lag_bytes"] = int(r["lag_bytes"])
            data[f"{key}.lag_s"] = round(float(r["lag_s"]), 3)
        return data

    async def _replica_facts(self) -> dict[str, Scalar]:
        row = await self._pg.fetchrow(REPLICA_QUERY, self._timeout)
        lag_s, lag_bytes = replica_lag(row)
        upstream = f"{row['sender_host']}:{row['sender_port']}" if row["sender_host"] else ""
        data: dict[str, Scalar] = {
            "timeline": int(row["timeline"] or 0),
            "receiver": str(row["receiver"]),
            "upstream": upstream,
            "lag_s": round(lag_s, 3),
            "lag_bytes": lag_bytes,
        }
        for key in ("receive_position", "replay_position"):
            if row[key] is not None:
                data[key] = int(row[key])
        if row["last_message_age_s"] is not None:
            data["last_message_age_s"] = round(float(row["last_message_age_s"]), 3)
        return data

    def _integrity(self, state: Mapping[str, Any]) -> dict[str, Scalar]:
        failures = int(state["checksum_failures"])
        new = failures - self._seen_failures if self._seen_failures is not None else failures
        self._seen_failures = failures
        corrupt = failures > 0 or self.sweep.result == "corrupt"
        data: dict[str, Scalar] = {
            "integrity": "corrupt" if corrupt else "ok",
            "data_checksums": bool(state["data_checksums"]),
            "checksum_failures": failures,
            "checksum_failures_new": max(0, new),
            "amcheck": self.sweep.result,
            "amcheck_at": self.sweep.at,
            "amcheck_indexes": self.sweep.indexes,
        }
        if state["checksum_last_failure"] is not None:
            data["checksum_last_failure"] = float(state["checksum_last_failure"])
        if self.sweep.detail:
            data["amcheck_detail"] = self.sweep.detail[:200]
        return data

    def _verdict(self, data: Mapping[str, Scalar]) -> tuple[Status, str]:
        """The first rule that finds something, worst first; else ok."""
        rules = (
            self._other_cluster,
            self._corrupt,
            self._blind,
            self._not_streaming,
            self._lag_verdict,
            self._no_checksums,
        )
        for rule in rules:
            found = rule(data)
            if found is not None:
                return found
        return Status.OK, self._summary(data)

    def _other_cluster(self, data: Mapping[str, Scalar]) -> Verdict | None:
        expected = self._cfg.expect_system_identifier
        if expected is None or data["system_identifier"] == expected:
            return None
        return Status.CRITICAL, (
            f"{data['role']} of another cluster: system identifier "
            f"{data['system_identifier']}, expected {expected} (restored or re-initialised?)"
        )

    def _corrupt(self, data: Mapping[str, Scalar]) -> Verdict | None:
        return (Status.CRITICAL, self._corruption(data)) if data["integrity"] == "corrupt" else None

    def _blind(self, data: Mapping[str, Scalar]) -> Verdict | None:
        """Without pg_monitor the WAL receiver and the replicas read as empty."""
        if data["sees_replication"]:
            return None
        user = self._pg.cfg.user
        return Status.UNKNOWN, (
            f"{data['role']}: user {user!r} cannot read the replication state "
            f"(GRANT pg_monitor TO {user})"
        )

    @staticmethod
    def _not_streaming(data: Mapping[str, Scalar]) -> Verdict | None:
        if data["role"] != "replica" or data.get("receiver") == "streaming":
            return None
        return Status.CRITICAL, (
            f"replica not streaming (WAL receiver {data.get('receiver')}; "
            f"upstream {data.get('upstream') or 'none'})"
        )

    def _no_checksums(self, data: Mapping[str, Scalar]) -> Verdict | None:
        if not self._cfg.require_data_checksums or data["data_checksums"]:
            return None
        return (
            Status.WARNING,
            f"{data['role']}: data checksums are off (page corruption goes unseen)",
        )

    @staticmethod
    def _corruption(data: Mapping[str, Scalar]) -> str:
        parts = []
        if int(data["checksum_failures"]):
            parts.append(f"{data['checksum_failures']} checksum failure(s)")
        if data["amcheck"] == "corrupt":
            parts.append(f"amcheck: {data.get('amcheck_detail', 'an index is corrupt')}")
        return f"{data['role']}: data corrupt: {'; '.join(parts)}"

    def _lag_verdict(self, data: Mapping[str, Scalar]) -> Verdict | None:
        if data["role"] != "replica":
            return None
        cfg = self._cfg
        lag_s, lag_bytes = float(data["lag_s"]), int(data["lag_bytes"])
        text = f"replica of {data['upstream']}, lag {lag_s:.1f}s / {lag_bytes} bytes"
        if lag_s >= cfg.critical_lag or _at_least(lag_bytes, cfg.critical_lag_bytes):
            return Status.CRITICAL, text
        if lag_s >= cfg.warning_lag or _at_least(lag_bytes, cfg.warning_lag_bytes):
            return Status.WARNING, text
        return None

    @staticmethod
    def _summary(data: Mapping[str, Scalar]) -> str:
        if data["role"] == "primary":
            return (
                f"primary, timeline {data['timeline']}, "
                f"{data['replicas_streaming']}/{data['replicas']} replica(s) streaming, "
                f"integrity ok"
            )
        return (
            f"replica of {data['upstream']}, lag {float(data['lag_s']):.1f}s / "
            f"{data['lag_bytes']} bytes, integrity ok"
        )

    # --- amcheck, in the background ---------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await self.sweep_now()
            if self.sweep.result != "ok":
                log.warning("postgres.amcheck", result=self.sweep.result, detail=self.sweep.detail)
            await asyncio.sleep(self._cfg.amcheck_interval)

    async def sweep_now(self) -> SweepResult:
        """Run one sweep now and remember its result (tests, and `start` on a schedule)."""
        start = self.sweep.next_oid
        self.sweep = await amcheck_sweep(self._pg, self._cfg, time.time(), start)
        return self.sweep


INDEXES_QUERY = """
SELECT c.oid, c.oid::regclass::text AS name
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready
  AND c.oid > $2::oid
ORDER BY c.oid LIMIT $1
"""


async def amcheck_sweep(
    pg: Postgres, cfg: PostgresCheckConfig, now: float, after_oid: int = 0
) -> SweepResult:
    """`bt_index_check` on up to `amcheck_max_indexes` B-tree indexes with OIDs above
    `after_oid`, within the budget, on a connection of its own (the check's session
    stays free for the fast queries)."""
    try:
        conn = await pg.connect(pg.cfg.connect_timeout, purpose="amcheck")
    except DatabaseError as err:
        return SweepResult("error", now, 0, str(err))
    try:
        async with asyncio.timeout(cfg.amcheck_budget):
            return await _check_indexes(conn, cfg, now, after_oid)
    except TimeoutError:
        return SweepResult("error", now, 0, f"sweep exceeded {format_duration(cfg.amcheck_budget)}")
    except Exception as err:
        return SweepResult("error", now, 0, describe_error(err, pg.cfg))
    finally:
        conn.terminate()


async def _check_indexes(
    conn: asyncpg.Connection, cfg: PostgresCheckConfig, now: float, after_oid: int
) -> SweepResult:
    installed = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")
    if not installed:
        return SweepResult("unavailable", now, 0, "the amcheck extension is not installed")
    indexes = await conn.fetch(INDEXES_QUERY, cfg.amcheck_max_indexes, after_oid)
    for n, index in enumerate(indexes):
        try:
            await conn.execute("SELECT bt_index_check($1::oid::regclass)", index["oid"])
        except (asyncpg.DataCorruptedError, asyncpg.IndexCorruptedError) as err:
            # Start here again next time: a corrupt index stays reported until it is fixed.
            return SweepResult("corrupt", now, n + 1, f"{index['name']}: {err}", after_oid)
    full = len(indexes) == cfg.amcheck_max_indexes
    return SweepResult("ok", now, len(indexes), next_oid=int(indexes[-1]["oid"]) if full else 0)


def _at_least(value: int, threshold: int | None) -> bool:
    return threshold is not None and value >= threshold
