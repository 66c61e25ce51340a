"""Running a short command to its end under a deadline: the one place that does it; the
same with its failures worded as BackupError; and one psql query on top of that."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from drwatch.backup.errors import BackupError

_STDERR_TAIL = 500  # characters of a failed command's stderr kept in the error


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


async def run_checked(
    argv: Sequence[str], deadline_s: float, *, user: str | None = None, label: str = ""
) -> bytes:
    """`communicate`, its failures as BackupError: "cannot run PROGRAM: ..." when it cannot
    start, "LABEL: did not finish in Ns" past the deadline, "LABEL: " and the end of its
    stderr on a non-zero exit (`label` defaults to the program). Its stdout otherwise."""
    label = label or argv[0]
    try:
        code, out, err = await communicate(argv, deadline_s, user=user)
    except TimeoutError:  # before OSError, of which it is a subclass
        raise BackupError(f"{label}: did not finish in {deadline_s:g}s") from None
    except OSError as e:
        raise BackupError(f"cannot run {argv[0]}: {e.strerror}") from None
    if code != 0:
        raise BackupError(f"{label}: {err.decode(errors='replace').strip()[-_STDERR_TAIL:]}")
    return out


async def psql_query(
    psql: str, conn_args: Sequence[str], database: str, sql: str, deadline_s: float, *, where: str
) -> str:
    """The answer of one query through `psql -X -At` (columns joined by `|`), stripped;
    failures as `run_checked` words them, `where` (what was asked) as the label."""
    argv = [psql, *conn_args, "-X", "-At", "-F", "|", "-d", database, "-c", sql]
    return (await run_checked(argv, deadline_s, label=where)).decode().strip()
