"""The sandbox's writer: a timestamped row every 100 ms into whatever database the app
servers are told to use, so a drill can measure how much acknowledged data it lost.

One long-lived `psql` per target server reads the INSERTs on its stdin and prints each
row's `seq` as PostgreSQL commits it (`RETURNING seq`): a printed seq is an
acknowledged row. A target that changes (the app servers were repointed), refuses, or
does not answer within `ACK_TIMEOUT_S` ends that psql; the next row starts a new one.
No database driver is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drwatch.logs import get_logger
from drwatch.sandbox.pgcluster import HOST, PG_BIN, PG_USER

log = get_logger(component="sandbox.writer")

INTERVAL_S = 0.1
ACK_TIMEOUT_S = 1.0
RETRY_S = 0.5  # after a failed row, wait this long before starting another psql


@dataclass
class Tally:
    """Every row the writer tried, and the ones the database acknowledged (seq -> time)."""

    attempted: int = 0
    acked: dict[int, float] = field(default_factory=dict)
    first_at: float | None = None


class _Session:
    """One psql connected to one port."""

    def __init__(self, port: int, proc: asyncio.subprocess.Process) -> None:
        self.port = port
        self.proc = proc

    @classmethod
    async def open(cls, port: int) -> _Session:
        proc = await asyncio.create_subprocess_exec(
            str(PG_BIN / "psql"),
            *("-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"),
            *("-h", HOST, "-p", str(port), "-U", PG_USER, "-d", "postgres"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(port, proc)

    async def insert(self, table: str, seq: int, at: float) -> bool:
        """True when the row was committed (psql printed its seq back)."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None or self.proc.returncode is not None:
            return False
        # seq and at are numbers we made; table is our constant: nothing to escape.
        row = f"INSERT INTO {table} (seq, at) VALUES ({seq}, {at!r}) RETURNING seq;\n"  # noqa: S608
        stdin.write(row.encode())
        try:
            await stdin.drain()
            async with asyncio.timeout(ACK_TIMEOUT_S):
                line = await stdout.readline()
        except (OSError, TimeoutError):
            return False
        return line.strip() == str(seq).encode()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.proc.wait()


class Writer:
    """Writes a row every INTERVAL_S into the server `port()` names (None: nowhere now)."""

    def __init__(self, port: Callable[[], int | None], table: str) -> None:
        self._port = port
        self._table = table
        self.tally = Tally()
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self.last_port: int | None = None  # where the newest acknowledged row went

    @property
    def target_port(self) -> int | None:
        return self._session.port if self._session is not None else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while True:
            seq += 1
            await self._write(seq)
            next_at += INTERVAL_S
            # Fixed rate; after a long stall, carry on from now rather than burst.
            next_at = max(next_at, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _write(self, seq: int) -> None:
        self.tally.attempted += 1
        port = self._port()
        if self._session is not None and self._session.port != port:
            await self._session.close()
            self._session = None
        if port is None:
            return
        if self._session is None:
            if time.monotonic() < self._retry_at:
                return
            self._session = await _Session.open(port)
        at = time.time()
        if await self._session.insert(self._table, seq, at):
            self.tally.acked[seq] = at
            self.last_port = port
            if self.tally.first_at is None:
                self.tally.first_at = at
        else:
            await self._session.close()
            self._session = None
            self._retry_at = time.monotonic() + RETRY_S
