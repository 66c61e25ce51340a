"""Running a short command to its end under a deadline: the one place that does it; and
one psql query on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from drwatch.backup.errors import BackupError


async def communicate(
    argv: Sequence[str], deadline_s: float, *, user: str | None = None
) -> tuple[int, bytes, bytes]:
    """Run `argv` with no input (as `user` when given: we may be root); its exit status,
    stdout and stderr.

    The command leads its own process group. Past `deadline_s` the whole group is killed
    (initdb, for one, leaves a backend behind) and the command reaped, and TimeoutError
    raised; OSError when it cannot start at all. Each caller words both for its command.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )
    try:
        async with asyncio.timeout(deadline_s):
            out, err = await proc.communicate()
    except BaseException:  # the deadline, or the caller cancelled: nothing outlives us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    return proc.returncode if proc.returncode is not None else -1, out, err


async def psql_query(
    psql: str, conn_args: Sequence[str], database: str, sql: str, deadline_s: float, *, where: str
) -> str:
    """The answer of one query through `psql -X -At` (columns joined by `|`), stripped.

    BackupError when psql cannot start ("cannot run psql (PATH): ..."), misses the deadline
    ("WHERE: no answer in Ns") or fails ("WHERE: " and its stderr); `where` names what
    was asked, for the caller's reader.
    """
    argv = [psql, *conn_args, "-X", "-At", "-F", "|", "-d", database, "-c", sql]
    try:
        code, out, err = await communicate(argv, deadline_s)
    except TimeoutError:  # before OSError, of which it is a subclass
        raise BackupError(f"{where}: no answer in {deadline_s:g}s") from None
    except OSError as e:
        raise BackupError(f"cannot run psql ({psql}): {e.strerror}") from None
    if code != 0:
        raise BackupError(f"{where}: {err.decode(errors='replace').strip()}")
    return out.decode().strip()
