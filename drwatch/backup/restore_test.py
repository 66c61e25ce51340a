"""`drwatch backup restore-test`: the proof that the newest dump restores.

Run by an operator on a machine that holds the private key (the watcher need not):
the newest dump of a class is found at a location from the manifests stored beside
the chunks (no state directory needed), verified there, decrypted with the key and
streamed into `pg_restore` against a scratch PostgreSQL started for the test in a
temporary directory. It reports the rows restored, the time the restore took (a
measured RTO for data) and the data's age (a measured RPO). Exit 0 when it restored,
1 when it did not, 2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drwatch.backup.config import BackupKind, LocationName
from drwatch.backup.dump import PgEndpoint
from drwatch.backup.errors import BackupError
from drwatch.backup.manifest import MANIFEST_NAME, Manifest
from drwatch.backup.model import State
from drwatch.backup.proc import psql_query, run_checked
from drwatch.backup.restore import Decryptor, into_command, plaintext
from drwatch.backup.store import ObjectStore, S3Store
from drwatch.backup.verify import verify
from drwatch.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_READY_DEADLINE = 60.0
_INITDB_DEADLINE = 120.0
_PSQL_DEADLINE = 60.0
_COUNT_ROWS = (
    "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]"
    "::text::bigint), 0) FROM pg_tables "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
)


@dataclass(frozen=True)
class RestoreReport:
    data_class: str
    location: str
    backup_id: str
    rows: int
    restore_s: float
    data_age_s: float
    bytes: int


def restore_test_command(args: argparse.Namespace) -> int:
    from drwatch import config as config_mod  # noqa: PLC0415  (the daemon's config)

    try:
        cfg = config_mod.load(args.config)
        if cfg.backup is None or args.data_class not in cfg.backup.classes:
            raise ConfigError([f"backup.classes: no class {args.data_class!r} configured"])
        location = cfg.backup.locations.configured().get(LocationName(args.location))
        if location is None:
            raise ConfigError([f"backup.locations.{args.location}: not configured"])
    except ConfigError as err:
        print(f"drwatch: {'; '.join(err.problems)}", flush=True)
        return EXIT_BAD_INPUT
    try:
        report = asyncio.run(
            restore_test(
                cfg.backup.gpg_binary,
                location,
                args.location,
                args.data_class,
                args.key,
                args.pg_bin,
            )
        )
    except BackupError as err:
        print(f"drwatch: restore test failed: {err}", flush=True)
        return EXIT_FAILED
    print(json.dumps(asdict(report)) if args.json else _words(report), flush=True)
    return EXIT_OK


def _words(r: RestoreReport) -> str:
    return (
        f"restored {r.backup_id} ({r.data_class} at {r.location}, {r.bytes} bytes): "
        f"{r.rows} rows in {r.restore_s:.1f}s; the data was {r.data_age_s:.0f}s old"
    )


async def restore_test(  # noqa: PLR0917
    gpg: str, location: Any, location_name: str, data_class: str, key: Path, pg_bin: Path
) -> RestoreReport:
    async with S3Store(location_name, location) as store:
        manifest = await newest_dump(store, location.prefix, data_class)
        return await restore_manifest(gpg, store, location.prefix, manifest, key, pg_bin)


async def restore_manifest(  # noqa: PLR0917
    gpg: str, store: ObjectStore, root: str, manifest: Manifest, key: Path, pg_bin: Path
) -> RestoreReport:
    """Verify `manifest`'s dump at `store`, decrypt it with `key` and restore it into a
    scratch PostgreSQL; what it restored, how long that took and how old the data is."""
    verdict = await verify(store, manifest, root, frozenset(manifest.key_ids))
    if verdict.state is not State.VERIFIED:
        raise BackupError(f"{manifest.backup_id} is {verdict.state.value}: {verdict.why}")
    async with scratch_postgres(pg_bin) as pg, Decryptor(gpg, key) as decryptor:
        started = time.monotonic()
        restore = [
            str(pg_bin / "pg_restore"),
            *pg.conn_args(),
            "--exit-on-error",
            "--no-owner",
            "-d",
            pg.database,
        ]
        await into_command(plaintext(store, manifest, root, decryptor), restore)
        elapsed = time.monotonic() - started
        rows = int(await _psql(pg, _COUNT_ROWS))
    return RestoreReport(
        data_class=manifest.data_class,
        location=store.name,
        backup_id=manifest.backup_id,
        rows=rows,
        restore_s=elapsed,
        data_age_s=time.time() - manifest.created_at,
        bytes=manifest.size,
    )


async def newest_dump(store: S3Store, root: str, data_class: str) -> Manifest:
    """The newest dump of the class with a manifest at this location."""
    prefix = f"{root.strip('/')}/{data_class}/{BackupKind.DUMP.value}/"
    names = [k for k in await store.keys(prefix) if k.endswith("/" + MANIFEST_NAME)]
    if not names:
        raise BackupError(f"no dump of {data_class} at {store.name} ({prefix})")
    manifests = []
    for name in names:
        body = b"".join([b async for b in store.read(name, 1 << 20)])
        manifests.append(Manifest.from_json(body))
    return max(manifests, key=lambda m: (m.created_at, m.backup_id))


@asynccontextmanager
async def scratch_postgres(pg_bin: Path) -> AsyncIterator[PgEndpoint]:
    """A throwaway PostgreSQL on loopback in a temporary directory (run as the postgres
    user when we are root: initdb refuses root), with an empty `scratch` database."""
    root = Path(tempfile.mkdtemp(prefix="drwatch-scratch-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(root, user, user)
    data, port = root / "data", _free_port()
    initdb = [str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    server_argv = [
        str(pg_bin / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(root),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
    ]
    try:
        await _as(user, initdb)
        server = await _start(user, server_argv)
        try:
            endpoint = PgEndpoint("127.0.0.1", port, bin_dir=pg_bin)
            await _ready(endpoint)
            await _psql(endpoint, "CREATE DATABASE scratch")
            yield PgEndpoint("127.0.0.1", port, database="scratch", bin_dir=pg_bin)
        finally:
            server.terminate()
            try:
                async with asyncio.timeout(30):
                    await server.wait()
            except TimeoutError:
                server.kill()
                await server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _as(user: str | None, argv: list[str], deadline_s: float = _INITDB_DEADLINE) -> None:
    """A short command as `user`, to its end (killed and reaped past the deadline)."""
    await run_checked(argv, deadline_s, user=user)


async def _start(user: str | None, argv: list[str]) -> asyncio.subprocess.Process:
    """The scratch server, in its own session; `scratch_postgres` stops and reaps it."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        start_new_session=True,
    )


async def _ready(endpoint: PgEndpoint) -> None:
    end = time.monotonic() + _READY_DEADLINE
    while True:
        try:
            if await _psql(endpoint, "SELECT 1") == "1":
                return
        except BackupError as err:
            if time.monotonic() > end:
                raise BackupError(
                    f"scratch PostgreSQL not ready in {_READY_DEADLINE:g}s: {err}"
                ) from None
        await asyncio.sleep(0.2)


async def _psql(endpoint: PgEndpoint, sql: str) -> str:
    psql = str(endpoint.bin_dir / "psql")
    return await psql_query(
        psql, endpoint.conn_args(), endpoint.database, sql, _PSQL_DEADLINE, where="psql"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
