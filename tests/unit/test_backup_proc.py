"""`communicate`: a short command under a deadline leaves nothing behind when it overruns."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from drwatch.backup.proc import communicate


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
