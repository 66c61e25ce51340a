"""A logical dump of a PostgreSQL replica as a backup source (`pg_dump -Fc`).

This is the watcher-side form, used where drwatch can reach the replica's port itself
(tests, the sandbox). In production the dump runs on the database host through the
agent, so plaintext never leaves it; that path plugs into the same `Source`.

A dump is taken on a replica, never on the primary (refused unless allowed), and
carries the cluster's system identifier and the replay position read right before it
started (the dump is consistent at or after that point). `pg_dump -Fc` compresses
already, which is why gpg's compression stays off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drwatch.backup.errors import BackupError
from drwatch.backup.pipeline import command_stream
from drwatch.backup.proc import psql_query
from drwatch.backup.source import Source

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_QUERY = (
    "SELECT system_identifier, pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() "
    "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END FROM pg_control_system()"
)
_QUERY_TIMEOUT = 15.0


@dataclass(frozen=True)
class PgEndpoint:
    host: str
    port: int
    user: str = "postgres"
    database: str = "postgres"
    bin_dir: Path = PG_BIN

    def conn_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "--no-password"]


async def replica_dump(endpoint: PgEndpoint, *, allow_primary: bool = False) -> Source:
    """The dump of `endpoint`'s database as a stream, with its identity."""
    system_id, in_recovery, lsn = await _identity(endpoint)
    if not in_recovery and not allow_primary:
        raise BackupError(
            f"{endpoint.host}:{endpoint.port} is a primary: dumps are taken on a replica"
        )
    argv = [str(endpoint.bin_dir / "pg_dump"), *endpoint.conn_args(), "-Fc", endpoint.database]
    return Source(
        stream=command_stream(argv),
        identity={
            "system_identifier": system_id,
            "host": f"{endpoint.host}:{endpoint.port}",
            "database": endpoint.database,
            "role": "replica" if in_recovery else "primary",
        },
        consistent_at={
            "lsn_before": lsn,
            "time_before": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


async def _identity(endpoint: PgEndpoint) -> tuple[str, bool, str]:
    answer = await psql_query(
        str(endpoint.bin_dir / "psql"),
        endpoint.conn_args(),
        endpoint.database,
        _QUERY,
        _QUERY_TIMEOUT,
        where=f"{endpoint.host}:{endpoint.port}",
    )
    system_id, recovery, lsn = answer.split("|")
    return system_id, recovery == "t", lsn
