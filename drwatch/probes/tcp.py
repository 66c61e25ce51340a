"""TCP connect probe: the port accepts a connection, or why not."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from typing import Protocol

from drwatch.model.observation import Health
from drwatch.probes.result import ProbeResult, seconds


class TcpCheck(Protocol):
    """What the observers need of a TCP probe (TcpProbe; fakes in tests)."""

    async def check(self, host: str, port: int, timeout_s: float) -> ProbeResult: ...


class TcpProbe:
    """Connects and closes. A refused connection is DOWN (the host answered "nobody here");
    a timeout or a network error is UNKNOWN (we could not see the target)."""

    async def check(self, host: str, port: int, timeout_s: float) -> ProbeResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return ProbeResult(Health.UNKNOWN, f"timeout after {seconds(timeout_s)}")
        except OSError as err:
            return connect_failure(err)
        latency = time.monotonic() - started
        writer.close()
        # The port answered; how the close goes says nothing more about it.
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(timeout_s):
                await writer.wait_closed()
        return ProbeResult(Health.UP, latency_s=latency)


def connect_failure(err: OSError) -> ProbeResult:
    """Map a connect error: refused -> DOWN; DNS and other network errors -> UNKNOWN."""
    if isinstance(err, ConnectionRefusedError) or err.errno == errno.ECONNREFUSED:
        return ProbeResult(Health.DOWN, "connection refused")
    if isinstance(err, socket.gaierror):
        return ProbeResult(Health.UNKNOWN, f"dns: {err.strerror or 'name not resolved'}")
    text = err.strerror or type(err).__name__
    return ProbeResult(Health.UNKNOWN, f"connect: {text.lower()}")
