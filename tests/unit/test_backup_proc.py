"""`communicate`: a short command under a deadline leaves nothing behind when it overruns;
`run_checked` and `psql_query` word each failure as a BackupError."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from drwatch.backup.errors import BackupError
from drwatch.backup.proc import communicate, psql_query, run_checked
from tests.support.postgres import pg_binary
from tests.support.services import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_the_whole_group_is_killed_and_reaped_past_the_deadline(tmp_path: Path) -> None:
    """A command that started a child and hangs: TimeoutError, and neither it nor its
    child (initdb leaves a backend like this) outlives the call."""
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo $$ >> {pid_file}; wait"
    with pytest.raises(TimeoutError):
        await communicate(["sh", "-c", script], 1.0)
    pids = [int(p) for p in pid_file.read_text().split()]
    for _ in range(200):  # the kernel delivers SIGKILL promptly; 10 s at most
        if not any(_alive(p) for p in pids):
            break
        await asyncio.sleep(0.05)
    assert not [p for p in pids if _alive(p)]


async def test_a_command_that_finishes_gives_its_status_and_output() -> None:
    code, out, err = await communicate(["sh", "-c", "echo out; echo err >&2; exit 3"], 10.0)
    assert (code, out, err) == (3, b"out\n", b"err\n")


async def test_psql_query_names_a_psql_that_cannot_start(tmp_path: Path) -> None:
    """No psql at that path: the error says so, with the path."""
    missing = str(tmp_path / "psql")
    with pytest.raises(BackupError, match=r"cannot run .*/psql: No such file"):
        await psql_query(missing, [], "postgres", "SELECT 1", 10.0, where="db:5432")


async def test_psql_query_says_where_a_refused_connection_went() -> None:
    """Nothing listens on the port: psql fails, and the error names the endpoint and
    carries psql's own words."""
    psql = pg_binary("psql")
    port = free_port()
    conn = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "--no-password"]
    with pytest.raises(BackupError) as caught:
        await psql_query(psql, conn, "postgres", "SELECT 1", 30.0, where=f"127.0.0.1:{port}")
    assert str(caught.value).startswith(f"127.0.0.1:{port}: ")
    assert "Connection refused" in str(caught.value) or "connect" in str(caught.value)


async def test_psql_query_gives_up_on_a_server_that_never_answers() -> None:
    """A port that accepts and never speaks: past the deadline, "did not finish in 1s"."""
    psql = pg_binary("psql")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        conn = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "--no-password"]
        with pytest.raises(BackupError, match=r"^silent: did not finish in 1s$"):
            await psql_query(psql, conn, "postgres", "SELECT 1", 1.0, where="silent")


async def test_run_checked_gives_stdout_and_names_each_failure(tmp_path: Path) -> None:
    """Its output when it succeeds; else what could not start, what overran its deadline
    (not taken for a missing program: TimeoutError is an OSError), and the end of the
    stderr of what failed, under the label given or the program's name."""
    assert await run_checked(["sh", "-c", "echo out"], 10.0) == b"out\n"
    with pytest.raises(BackupError, match=r"^cannot run /nonexistent/tool: No such file"):
        await run_checked(["/nonexistent/tool"], 10.0)
    with pytest.raises(BackupError, match=r"^sleep: did not finish in 0.5s$"):
        await run_checked(["sleep", "30"], 0.5)
    long_err = "x" * 2000 + " the reason"
    with pytest.raises(BackupError, match=r"^gpg --import: x+ the reason$") as caught:
        await run_checked(
            ["sh", "-c", f"echo '{long_err}' >&2; exit 2"], 10.0, label="gpg --import"
        )
    assert len(str(caught.value)) < 600  # the end of a long stderr, not all of it
