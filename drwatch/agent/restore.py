"""Restoring a dump into this host's PostgreSQL from the watcher's stream (docs/agent.md).

The database ladder's last rung (`restore_from_dump`) decrypts a verified dump on the
watcher and streams its plaintext here (`POST /v1/restore`, drwatch.agent.wire's
frames, each authenticated before a byte of it is used). The agent pipes it straight
through `pg_restore --single-transaction -f -` (the archive as SQL, one transaction)
into `psql` against its local server: the plaintext is never written to this host's
disk, and a restore that fails or is cut short leaves the database as empty as it found
it (psql is killed before its input ends: the transaction never commits).

Refusals, each with its reason: the database is a replica, it already holds tables
(never restore over data), it already holds another restored dump, the stream is larger
than `restore_max_bytes` or slower than `restore_timeout`, it is truncated or a frame
fails its HMAC, or it is not a dump at all (pg_restore's own words).

Idempotent: a finished restore leaves a mark on the database (its comment, `drwatch
restore {...}`), set just before the restore's COMMIT, in the same transaction (restored
and marked, or neither); the same dump streamed again is answered from the mark, and nothing
runs. `restore_status` (an action) reads the mark, so the watcher asks before it streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drwatch.agent.actions import ActionError, check_params
from drwatch.agent.wire import FrameReader
from drwatch.errors import WireError
from drwatch.logs import get_logger

BACKUP_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")
MARK = "drwatch restore "
_QUERY_TIMEOUT = 30.0
_STDERR_TAIL = 600
_USER_RELATIONS = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
)
_STATE = (
    "SELECT pg_is_in_recovery(), coalesce(shobj_description(oid, 'pg_database'), '') "
    "FROM pg_database WHERE datname = current_database()"
)
log = get_logger(component="agent.restore")


@dataclass(frozen=True)
class LocalDatabase:
    """How pg_restore and psql reach the local server (a socket directory or loopback)."""

    host: str
    port: int
    user: str = "postgres"
    database: str = "postgres"
    bin_dir: Path = Path("/usr/lib/postgresql/15/bin")
    password: str | None = None

    def argv(self, tool: str, *extra: str) -> list[str]:
        conn = ["-h", self.host, "-p", str(self.port), "-U", self.user, "--no-password"]
        return [str(self.bin_dir / tool), *conn, *extra, "-d", self.database]

    def env(self) -> dict[str, str]:
        extra = {"PGPASSWORD": self.password} if self.password is not None else {}
        return {**os.environ, "PGCONNECT_TIMEOUT": "10", **extra}


@dataclass(frozen=True)
class RestoreLimits:
    max_bytes: int = 1 << 40
    timeout: float = 6 * 3600.0


class Restorer:
    """Restores streamed dumps into the database `target()` names (None: none runs)."""

    def __init__(
        self, target: Callable[[], LocalDatabase | None], limits: RestoreLimits | None = None
    ) -> None:
        self._target = target
        self.limits = limits or RestoreLimits()

    def _database(self) -> LocalDatabase:
        db = self._target()
        if db is None:
            raise ActionError("no local database is running to restore into", status=503)
        return db

    async def status(self, params: dict[str, str]) -> dict[str, object]:
        """The `restore_status` action: what this database holds restored, if anything."""
        check_params(params, frozenset({"backup_id"}))
        backup_id = _backup_id(params.get("backup_id", ""))
        _, mark = await _state(self._database())
        if mark is None:
            return {"restored": False}
        return {**mark, "restored": mark.get("backup_id") == backup_id}

    async def restore(self, backup_id: str, frames: FrameReader) -> dict[str, object]:
        """Pipe the stream's plaintext into pg_restore; what was restored (or, when this
        dump was restored before, that mark, with `already`)."""
        backup_id = _backup_id(backup_id)
        db = self._database()
        in_recovery, mark = await _state(db)
        if mark is not None:
            if mark.get("backup_id") == backup_id:
                return {**mark, "already": True}
            raise ActionError(
                f"this database already holds dump {mark.get('backup_id')}: not restoring "
                f"{backup_id} over it",
                status=409,
            )
        if in_recovery:
            raise ActionError(
                "this database is a replica: a dump restores into a primary", status=409
            )
        relations = int(await _psql(db, _USER_RELATIONS))
        if relations:
            raise ActionError(
                f"database not empty ({relations} relations in {db.database}): a dump is "
                "restored only into an empty database",
                status=409,
            )
        started = time.monotonic()
        log.info("agent.restore_started", backup_id=backup_id, database=db.database)
        done: dict[str, object] = {"backup_id": backup_id}

        def marked() -> str:
            # The mark goes in the restore's own transaction: restored and marked, or neither.
            done.update(bytes=frames.total, restore_s=round(time.monotonic() - started, 3))
            done["at"] = time.time()
            comment = _literal(MARK + json.dumps(done))
            return f"COMMENT ON DATABASE {_ident(db.database)} IS {comment};\n"

        await self._pipe(db, frames, marked)
        log.info("agent.restore_finished", backup_id=backup_id, bytes=frames.total)
        return {**done, "already": False}

    async def _pipe(self, db: LocalDatabase, frames: FrameReader, mark: Callable[[], str]) -> None:
        """pg_restore turns the archive into SQL wrapped in one transaction (no database
        needed); psql runs it, with the mark put before its final COMMIT. Anything short
        of that COMMIT (a bad stream, a failure, the deadline) kills psql first: the
        server rolls the whole restore back."""
        convert = await _spawn(
            [str(db.bin_dir / "pg_restore"), "--single-transaction", "--no-owner", "-f", "-"], db
        )
        apply = await _spawn(db.argv("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"), db)
        pump = asyncio.create_task(_pump(convert, apply))
        errors = [asyncio.create_task(_stderr(p)) for p in (convert, apply)]
        try:
            async with asyncio.timeout(self.limits.timeout):
                await _feed(convert, frames)
                code = await convert.wait()
                tail = await pump
                if code == 0 and apply.returncode is None:
                    await _commit(apply, tail, mark())
                # A failed pg_restore may be psql's doing (it stopped, and took pg_restore
                # down with it): give psql a moment to say so.
                applied = await apply.wait() if code == 0 else await _exited(apply, 1.0)
        except WireError as err:
            raise ActionError(f"bad stream: {err}; nothing restored", status=400) from None
        except TimeoutError:
            raise ActionError(
                f"the restore took longer than {self.limits.timeout:g}s; nothing restored",
                status=504,
            ) from None
        finally:
            pump.cancel()
            for proc in (apply, convert):  # psql first: it must never see its input end
                await _kill(proc)
            said = [(await e).strip() for e in errors]
        if applied not in (0, None):
            raise ActionError(f"the restore failed (psql): {said[1][-_STDERR_TAIL:]}", status=422)
        if code != 0:
            raise ActionError(_pg_restore_failure(code, said[0]), status=422)


# pg_restore --single-transaction ends its script with COMMIT and a short footer (comments,
# and on current 15.x `\unrestrict KEY`): the last 4 KiB always hold that COMMIT.
_COMMIT = b"COMMIT;\n"
_HELD = 4096


async def _spawn(argv: list[str], db: LocalDatabase) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=db.env(),
        start_new_session=True,
    )


async def _pump(convert: asyncio.subprocess.Process, apply: asyncio.subprocess.Process) -> bytes:
    """pg_restore's SQL into psql, holding back its last bytes (the final COMMIT, which
    `_commit` replaces); returns them. psql stopping (an error) stops pg_restore too."""
    out, into = convert.stdout, apply.stdin
    assert out is not None
    assert into is not None
    held = b""
    try:
        while block := await out.read(1 << 16):
            data = held + block
            held = data[-_HELD:]
            into.write(data[:-_HELD])
            await into.drain()
    except (BrokenPipeError, ConnectionResetError):
        await _kill(convert)
        return b""
    return held


async def _commit(apply: asyncio.subprocess.Process, tail: bytes, mark: str) -> None:
    """The script's end: the mark just before its final COMMIT, then psql's input ends."""
    into = apply.stdin
    assert into is not None
    at = tail.rfind(b"\n" + _COMMIT) + 1
    if at == 0:
        raise ActionError(
            "pg_restore's script did not end with COMMIT; nothing restored", status=500
        )
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        into.write(tail[:at] + mark.encode() + tail[at:])
        await into.drain()
        into.close()
        await into.wait_closed()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode(errors="replace")


async def _exited(proc: asyncio.subprocess.Process, within: float) -> int | None:
    """Its exit status once it exits within `within` seconds; None while it runs."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            return await proc.wait()
    return None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())


async def _feed(proc: asyncio.subprocess.Process, frames: FrameReader) -> None:
    """Every frame's data into pg_restore's input, then its end. pg_restore stopping
    early (not a dump) leaves the rest unread: its exit status says why."""
    stdin = proc.stdin
    assert stdin is not None
    try:
        while data := await frames.next():
            stdin.write(data)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        return


def _pg_restore_failure(code: int, text: str) -> str:
    if "not appear to be a valid archive" in text or "input file is too short" in text:
        return f"not a dump (pg_restore: {text[-_STDERR_TAIL:]}); nothing restored"
    return f"pg_restore failed (exit {code}): {text[-_STDERR_TAIL:]}; nothing restored"


def _backup_id(value: str) -> str:
    if not BACKUP_ID.match(value):
        raise ActionError(f"backup_id: {value[:64]!r} is not [A-Za-z0-9_.:-]{{1,120}}", status=400)
    return value


async def _state(db: LocalDatabase) -> tuple[bool, dict[str, object] | None]:
    """(in recovery, the restore mark or None)."""
    out = await _psql(db, _STATE)
    recovery, _, comment = out.partition("|")
    mark: dict[str, object] | None = None
    if comment.startswith(MARK):
        with contextlib.suppress(ValueError):
            parsed = json.loads(comment[len(MARK) :])
            mark = parsed if isinstance(parsed, dict) else None
    return recovery == "t", mark


async def _psql(db: LocalDatabase, sql: str) -> str:
    argv = db.argv("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=db.env(),
            start_new_session=True,
        )
    except OSError as err:
        raise ActionError(f"cannot run psql: {err.strerror}", status=500) from None
    try:
        async with asyncio.timeout(_QUERY_TIMEOUT):
            out, errors = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise ActionError(
            f"database unreachable: no answer in {_QUERY_TIMEOUT:g}s", status=503
        ) from None
    if proc.returncode != 0:
        words = errors.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise ActionError(f"database unreachable: {words}", status=503)
    return out.decode().strip()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
