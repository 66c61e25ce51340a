"""Command actions and their children: a timeout kills the whole process group, and a
child left holding the output pipe does not hold the action (or its lock) hostage."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from drwatch.agent import config as agent_config
from drwatch.agent.actions import ActionError, CommandAction


def command(script: Path, timeout: str) -> CommandAction:
    cfg = agent_config.CommandActionConfig.model_validate(
        {"name": "run", "argv": ["/bin/sh", str(script)], "timeout": timeout}
    )
    return CommandAction(cfg)


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    """SIGKILL is sent at once; the kernel ends the process a moment later."""
    end = time.monotonic() + deadline_s
    while not gone(pid) and time.monotonic() < end:
        time.sleep(0.01)
    return gone(pid)


def read_pid(path: Path, deadline_s: float = 10.0) -> int:
    end = time.monotonic() + deadline_s
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < end, f"{path} never written"
        time.sleep(0.02)
    return int(path.read_text())


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test may leave running on failure; killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not gone(pid):
            os.kill(pid, 9)


async def test_a_timed_out_action_takes_its_children_with_it(
    tmp_path: Path, leftovers: list[int]
) -> None:
    """The script starts a background child and hangs: at the timeout the script and the
    child are both killed, and the action reports the timeout."""
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "hang.sh"
    script.write_text(f"sleep 300 &\necho $! > {pidfile}\nsleep 300\n")
    with pytest.raises(ActionError, match="timed out after 300ms"):
        await command(script, "300ms")({})
    child = read_pid(pidfile)
    leftovers.append(child)
    assert wait_gone(child)


async def test_a_child_holding_the_pipe_does_not_hold_the_action(
    tmp_path: Path, leftovers: list[int]
) -> None:
    """The script exits 0 but leaves a child with its stdout open: the action still
    succeeds with the output so far, instead of waiting out the timeout for EOF."""
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "leave.sh"
    script.write_text(f"echo done\nsleep 300 &\necho $! > {pidfile}\nexit 0\n")
    result = await command(script, "60s")({})
    leftovers.append(read_pid(pidfile))
    assert result == {"exit_status": 0, "output": "done\n"}
