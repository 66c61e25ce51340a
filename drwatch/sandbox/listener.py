"""A loopback HTTP server that can be silenced and brought back on the same port.

"Silent" is a closed port (connection refused), as a stopped server is; "hanging" is a
server that accepts and never answers, as one behind a dropped uplink is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AppFactory = Callable[[], web.Application]

# A hung request answers after this at the latest, so no handler outlives a test or drill.
HANG_LIMIT_S = 300.0


async def hang(until: asyncio.Event, limit_s: float = HANG_LIMIT_S) -> None:
    """Wait until `until` is set (the fault is healed), for at most `limit_s` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await until.wait()


class Gate:
    """An open/shut switch that hanging handlers can wait on: shut means hang."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def is_shut(self) -> bool:
        return not self._open.is_set()

    def shut(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def passage(self) -> None:
        """Return at once when open; hang while shut."""
        if self.is_shut:
            await hang(self._open)


def gate_middleware(gate: Gate) -> Middleware:
    """Every request waits at `gate` first (the cut uplink)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        await gate.passage()
        return await handler(request)

    return middleware


# Marks a request made inside the sandbox (a load balancer reaching its backends), as
# opposed to one from a watcher: a partition cuts only the watchers' path.
INTERNAL_HEADER = "X-Sandbox-Internal"


def outside_gate_middleware(gate: Gate) -> Middleware:
    """Requests from outside the sandbox (the watchers) wait at `gate`; internal ones pass."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get(INTERNAL_HEADER) != "1":
            await gate.passage()
        return await handler(request)

    return middleware


class Listener:
    """One port on 127.0.0.1; `start()`/`stop()` are idempotent and keep the port."""

    def __init__(self, port: int, factory: AppFactory) -> None:
        self.port = port
        self._factory = factory
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        # A short shutdown timeout: a hanging handler must not hold up a stop.
        runner = web.AppRunner(self._factory(), access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def set_running(self, running: bool) -> None:
        await (self.start() if running else self.stop())
