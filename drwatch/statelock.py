"""One daemon per state directory: an exclusive `flock` on `<state_dir>/drwatch.lock`.

Two daemons on one state directory would both journal and both act: two replacement
instances for one dead server. The lock is taken before anything else starts and is
released by the kernel when the process ends, `kill -9` included, so a restarted
daemon never finds a stale lock. The holder writes its PID into the file so the one
that is refused can name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drwatch.errors import ConfigError

LOCK_FILE = "drwatch.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return f"PID {text}" if text.isdigit() else "a process that has not written its PID yet"


@contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[Path]:
    """Hold the state directory for the duration of the block; yields the lock file.

    Raises ConfigError naming the holder's PID when another process holds it.
    """
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise ConfigError([f"{path}: cannot open the state directory's lock: {err}"]) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                [
                    f"another drwatch ({_holder(fd)}) is running on the state directory "
                    f"{state_dir} (lock {path}): stop it, or give this one its own "
                    "watcher.state_dir"
                ]
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield path
    finally:
        os.close(fd)
