"""Running a short command to its end under a deadline: the one place that does it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def communicate(argv: Sequence[str], deadline_s: float) -> tuple[int, bytes, bytes]:
    """Run `argv` with no input; its exit status, stdout and stderr.

    Past `deadline_s` the command is killed and reaped, and TimeoutError raised; OSError
    when it cannot start at all. Each caller words both for its own command.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(deadline_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode if proc.returncode is not None else -1, out, err
