"""TCP connect probe: the port accepts a connection, or why not."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

from drwatch.model.observation import Health
from drwatch.probes.result import ProbeResult, seconds


class TcpProbe:
    """Connects and closes. A refused connection is DOWN (the host answered "nobody here");
    a timeout or a network error is UNKNOWN (we could not see the target)."""

    async def check(self, host: str, port: int, timeout_s: float) -> ProbeResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                await writer.wait_closed()
        except TimeoutError:
            return ProbeResult(Health.UNKNOWN, f"timeout after {seconds(timeout_s)}")
        except OSError as err:
            return connect_failure(err)
        return ProbeResult(Health.UP, latency_s=time.monotonic() - started)


def connect_failure(err: OSError) -> ProbeResult:
    """Map a connect error: refused -> DOWN; DNS and other network errors -> UNKNOWN."""
    if isinstance(err, ConnectionRefusedError) or err.errno == errno.ECONNREFUSED:
        return ProbeResult(Health.DOWN, "connection refused")
    if isinstance(err, socket.gaierror):
        return ProbeResult(Health.UNKNOWN, f"dns: {err.strerror or 'name not resolved'}")
    text = err.strerror or type(err).__name__
    return ProbeResult(Health.UNKNOWN, f"connect: {text.lower()}")
