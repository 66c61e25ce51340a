"""The composition root: the only place concrete adapters are built and wired."""

from __future__ import annotations

import asyncio
import signal

from drwatch import __version__, logs
from drwatch.config import Config


async def run_daemon(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; then cancel every task and return the exit code."""
    logs.configure(cfg.watcher.log_format.value, cfg.watcher.log_level)
    log = logs.get_logger(watcher=cfg.watcher.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("daemon.start", version=__version__)
    await stop.wait()
    log.info("daemon.stop")
    return 0
