"""The streaming pipeline: bytes -> gpg --encrypt -> chunks -> S3 multipart uploads.

The plaintext is cut into chunks before encryption and each chunk is its own gpg
run, so every object is a complete OpenPGP message to the recipient: verification can
prove that of each object on its own, and a restore decrypts chunk after chunk. The
ciphertext is hashed (SHA-256) and uploaded part by part as it comes out of gpg;
memory holds at most `uploads_in_flight + 2` parts whatever the stream's size (the read
buffer, a full part waiting for a slot, the parts in flight).

Sizes respect S3's limits: a part is 5 MiB to 5 GiB and an object has at most 10,000
parts, so the part size grows with the object (`plan`). An error anywhere aborts the
multipart upload, deletes the chunks already uploaded and writes no manifest: a
failed backup leaves nothing behind and counts for nothing.

gpg's output is read from its pipe straight into a part-sized buffer (no asyncio
StreamReader: its buffer would copy every byte twice more); each full part is copied
once for the store and hashed in a worker thread while the event loop reads the next, so
SHA-256 is off the loop (bench/backup.py measures both).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from drwatch.backup.config import MIB, S3_MAX_OBJECT
from drwatch.backup.errors import BackupError
from drwatch.backup.gpg import Recipient
from drwatch.backup.manifest import MANIFEST_NAME, Chunk, Manifest, new_backup_id
from drwatch.backup.store import ObjectStore

MIN_PART = 5 * MIB
MAX_PART = 5 * 1024 * MIB
MAX_PARTS = 10_000
READ_BLOCK = 1 * MIB
# asyncio's StreamReader pauses its pipe at twice its limit; reading more than that at
# once empties its buffer every time, so no read pays to shift a remainder down.
_READER_LIMIT = READ_BLOCK
_TAKE_ALL = 4 * READ_BLOCK
PIPE_BYTES = 1 * MIB
_F_SETPIPE_SZ = 1031  # Linux fcntl
_CLEANUP_TIMEOUT = 30.0


def _log() -> Any:
    return structlog.get_logger("drwatch.backup")


def ciphertext_bound(plain: int) -> int:
    """The most gpg can write for `plain` bytes: packet framing, the session key packet
    and, with compression on incompressible data, zlib's worst case (well under 1%)."""
    return plain + plain // 100 + MIB


def part_size_for(object_bytes: int) -> int:
    """The smallest whole-MiB part size (at least 5 MiB) that fits the object in 10,000 parts."""
    need = -(-object_bytes // MAX_PARTS)
    size = max(MIN_PART, -(-need // MIB) * MIB)
    if size > MAX_PART:
        raise ValueError(f"{object_bytes} bytes do not fit one S3 object")
    return size


@dataclass(frozen=True)
class Plan:
    """How a stream is cut: plaintext bytes per chunk (object), bytes per part."""

    chunk_plain: int
    part_size: int


def plan(chunk_size: int, expected_size: int | None = None) -> Plan:
    """Parts sized for the expected stream (or the whole chunk when unknown); chunks cut
    so that an object never needs more than 10,000 parts or exceeds 5 TiB, even when the
    stream turns out larger than expected."""
    target = chunk_size if expected_size is None else min(chunk_size, expected_size)
    part = part_size_for(ciphertext_bound(target))
    fits_parts = (part * MAX_PARTS - MIB) * 100 // 101
    fits_object = (S3_MAX_OBJECT - MIB) * 100 // 101
    return Plan(chunk_plain=min(chunk_size, fits_parts, fits_object), part_size=part)


@dataclass(frozen=True)
class Target:
    """What is backed up, and where its objects go."""

    data_class: str
    kind: str
    root: str  # the location's prefix
    source: dict[str, str]
    consistent_at: dict[str, str]


class Pipeline:
    """Encrypts a stream to the recipient and uploads it as chunks with a manifest."""

    def __init__(
        self,
        recipient: Recipient,
        *,
        compression: str = "none",
        chunk_size: int = 1024 * MIB,
        uploads_in_flight: int = 2,
        stall_timeout: float = 300.0,
    ) -> None:
        self._recipient = recipient
        # A source that yields nothing for this long fails the run (a hung dump must
        # not hold the job forever: later runs would be skipped as overlaps).
        self._stall_timeout = stall_timeout
        self._compression = compression
        self._chunk_size = chunk_size
        self._in_flight = uploads_in_flight

    async def run(
        self,
        stream: AsyncIterable[bytes],
        store: ObjectStore,
        target: Target,
        *,
        now: float,
        backup_id: str | None = None,
        expected_size: int | None = None,
    ) -> Manifest:
        """The manifest of the uploaded backup, or BackupError with nothing left behind."""
        cut = plan(self._chunk_size, expected_size)
        backup_id = backup_id or new_backup_id(target.data_class, now, secrets.token_hex(2))
        draft = Manifest(
            backup_id=backup_id,
            data_class=target.data_class,
            kind=target.kind,
            created_at=now,
            recipient_fingerprint=self._recipient.fingerprint,
            key_ids=tuple(sorted(self._recipient.key_ids)),
            compression=self._compression,
            chunks=(),
            plain_bytes=0,
            source=target.source,
            consistent_at=target.consistent_at,
        )
        prefix = draft.prefix(target.root)
        source = _Source(stream, self._stall_timeout)
        chunks: list[Chunk] = []
        try:
            while not chunks or not await source.at_end():
                name = f"chunk-{len(chunks):05d}.gpg"
                chunks.append(await self._chunk(source, store, prefix + name, name, cut))
            manifest = _finished(draft, chunks, source.taken)
            await store.put(prefix + MANIFEST_NAME, manifest.to_json())
        except BaseException:
            await _shielded(_delete_all(store, [prefix + c.name for c in chunks]))
            raise
        finally:
            await source.aclose()
        _log().info("backup.uploaded", backup=backup_id, store=store.name, bytes=manifest.size)
        return manifest

    async def _chunk(
        self, source: _Source, store: ObjectStore, key: str, name: str, cut: Plan
    ) -> Chunk:
        proc, output = await _start_gpg(self._recipient.encrypt_argv(self._compression))
        upload = Upload(store, key, cut.part_size, self._in_flight)
        ciphertext = _PipeParts(output, cut.part_size)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_feed(source, proc, cut.chunk_plain))
                errors = tg.create_task(_read_all(proc.stderr))
                await upload.pump_parts(ciphertext, lambda: _gpg_result(proc, errors))
        except BaseExceptionGroup as group:
            await _shielded(upload.abort())
            raise first_error(group) from None
        except BaseException:
            await _shielded(upload.abort())
            raise
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(output)
        return Chunk(name=name, size=ciphertext.size, sha256=await ciphertext.hexdigest())


class Upload:
    """One object's multipart upload, started lazily: nothing is created at the store
    until the first part is full or gpg has finished cleanly.

    Parts upload concurrently (at most `in_flight`). They are not cancelled when another
    part or the stream fails: a request cut off mid-body can leave its pooled connection
    half-written, and the next call on it (the abort, the cleanup) then hangs. So the
    upload owns its part tasks and lets them settle before it aborts."""

    def __init__(self, store: ObjectStore, key: str, part_size: int, in_flight: int) -> None:
        self._store, self._key, self._part_size = store, key, part_size
        self._slots = asyncio.Semaphore(in_flight)
        self._upload_id: str | None = None
        # Creating the upload may be cancelled halfway (the source failed meanwhile):
        # the task lets `abort` still learn the id the store handed out, and abort it.
        self._creating: asyncio.Future[str] | None = None
        self._parts: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def pump(
        self, data_in: AsyncIterable[bytes], finished: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[int, str]:
        """Upload a stream to its end, part by part; (size, sha256) of the object.
        `finished` runs after the last byte and before the last part: it may still refuse."""
        parts = _CutParts(data_in, self._part_size)
        await self.pump_parts(parts, finished)
        return parts.size, await parts.hexdigest()

    async def pump_parts(
        self, parts: Parts, finished: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Upload the object `parts` cuts, then complete it (`finished` as in `pump`)."""
        async with contextlib.aclosing(parts.full()) as each:
            async for full in each:
                await self._send(full)
        if finished is not None:
            await finished()
        rest = await parts.rest()
        if rest or not self._parts:
            await self._send(rest)
        await asyncio.gather(*self._tasks)
        await self._store.complete_multipart(self._key, self._require_id(), self._ordered())

    async def _send(self, data: bytes) -> None:
        if self._upload_id is None:
            self._creating = asyncio.ensure_future(self._store.create_multipart(self._key))
            self._upload_id = await asyncio.shield(self._creating)
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise BackupError(f"{self._key}: more than {MAX_PARTS} parts (a planning bug)")
        await self._slots.acquire()
        self._raise_failed()
        self._parts[number] = ""
        task = asyncio.create_task(self._part(number, data))
        self._tasks.add(task)

    def _raise_failed(self) -> None:
        """A part that failed ends the upload (the slot just taken is given back)."""
        done = (t for t in self._tasks if t.done() and not t.cancelled())
        failed = next((err for t in done if (err := t.exception()) is not None), None)
        if failed is not None:
            self._slots.release()
            raise failed

    async def _part(self, number: int, data: bytes) -> None:
        try:
            upload_id = self._require_id()
            self._parts[number] = await self._store.upload_part(self._key, upload_id, number, data)
        finally:
            self._slots.release()

    def _require_id(self) -> str:
        assert self._upload_id is not None, "a part was sent before the upload began"
        return self._upload_id

    def _ordered(self) -> list[tuple[int, str]]:
        return sorted(self._parts.items())

    async def abort(self) -> None:
        """Let the parts in flight settle, then abort the upload (if it was created)."""
        if self._tasks:
            await asyncio.wait(self._tasks)
        for task in self._tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the error that matters is already raised
        if self._upload_id is None and self._creating is not None:
            with contextlib.suppress(Exception):
                self._upload_id = await self._creating
        if self._upload_id is not None:
            await self._store.abort_multipart(self._key, self._upload_id)
            _log().warning("backup.upload_aborted", key=self._key, store=self._store.name)


class Parts(Protocol):
    """An object's bytes cut into parts: every full part, then the rest; hashed on the way."""

    size: int

    def full(self) -> AsyncGenerator[bytes, None]: ...
    async def rest(self) -> bytes: ...
    async def hexdigest(self) -> str: ...


class _CutParts:
    """Pieces of a stream gathered into parts of exactly `size` bytes, copied once each."""

    def __init__(self, data_in: AsyncIterable[bytes], size: int) -> None:
        self._data_in = data_in
        self._size = size
        self._pieces: list[bytes] = []
        self._pending = 0
        self._digest = hashlib.sha256()
        self.size = 0

    async def full(self) -> AsyncGenerator[bytes, None]:
        async for piece in self._data_in:
            data = piece
            self._digest.update(data)
            self.size += len(data)
            while self._pending + len(data) >= self._size:
                cut = self._size - self._pending
                self._pieces.append(data[:cut])
                yield self._join()
                data = data[cut:]
            if data:
                self._pieces.append(data)
                self._pending += len(data)

    async def rest(self) -> bytes:
        return self._join()

    def _join(self) -> bytes:
        out = b"".join(self._pieces)
        self._pieces, self._pending = [], 0
        return out

    async def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _PipeParts:
    """A pipe's bytes (gpg's output) read straight into one part-sized buffer, reused part
    after part: the kernel's copy into it, then one copy per part for the store. Each part
    is hashed in a worker thread while the loop reads the next (hashlib lets go of the GIL
    for large buffers), so SHA-256 is off the event loop's critical path. The pipe is
    non-blocking; `full` waits for it to be readable in the loop. The caller owns the
    descriptor (and closes it)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._hash = _Hasher()
        self.size = 0

    async def full(self) -> AsyncGenerator[bytes, None]:
        view, end = self._view, len(self._buffer)
        while True:
            try:
                n = os.readv(self._fd, [view[self._filled :]])
            except BlockingIOError:
                await _readable(self._fd)
                continue
            if n == 0:
                return
            self._filled += n
            self.size += n
            if self._filled == end:
                self._filled = 0
                part = bytes(self._buffer)
                await self._hash.add(part)
                yield part

    async def rest(self) -> bytes:
        out = bytes(self._view[: self._filled])
        self._filled = 0
        await self._hash.add(out)
        return out

    async def hexdigest(self) -> str:
        return await self._hash.hexdigest()


class _Hasher:
    """SHA-256 of a stream whose pieces are hashed in a worker thread, one at a time and
    in order: `add` returns once the previous piece is hashed, so at most one piece is
    held here beyond what the caller holds."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._busy: asyncio.Future[None] | None = None

    async def add(self, data: bytes) -> None:
        await self._settle()
        self._busy = asyncio.ensure_future(asyncio.to_thread(self._digest.update, data))

    async def hexdigest(self) -> str:
        await self._settle()
        return self._digest.hexdigest()

    async def _settle(self) -> None:
        if self._busy is not None:
            busy, self._busy = self._busy, None
            await busy


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class _Source:
    """The plaintext stream, handed out in pieces no longer than asked for."""

    def __init__(self, stream: AsyncIterable[bytes], stall_timeout: float) -> None:
        self._stream = stream
        self._stall_timeout = stall_timeout
        self._it = aiter(stream)
        self._carry = b""
        self.taken = 0

    async def take(self, limit: int) -> bytes:
        """Up to `limit` bytes; b"" at the end of the stream."""
        data = self._carry
        self._carry = b""
        while not data:
            try:
                data = await self._next()
            except StopAsyncIteration:
                return b""
        if len(data) > limit:
            data, self._carry = data[:limit], data[limit:]
        self.taken += len(data)
        return data

    async def at_end(self) -> bool:
        if not self._carry:
            try:
                self._carry = await self._next()
            except StopAsyncIteration:
                return True
        return False

    async def _next(self) -> bytes:
        try:
            async with asyncio.timeout(self._stall_timeout):
                return await anext(self._it)
        except TimeoutError:
            raise BackupError(
                f"the source produced nothing for {self._stall_timeout:g}s (stalled)"
            ) from None

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


async def _start_gpg(argv: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    """gpg, and the non-blocking read end of its standard output (the caller closes it)."""
    output, into = os.pipe2(os.O_CLOEXEC)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=into,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        os.close(output)
        raise BackupError(f"cannot start gpg ({argv[0]}): {err.strerror}") from None
    finally:
        os.close(into)
    os.set_blocking(output, False)
    widen_pipes(proc)
    _widen(output)
    return proc, output


def widen_pipes(proc: asyncio.subprocess.Process) -> None:
    """1 MiB pipes to and from gpg instead of Linux's 64 KiB: a sixteenth of the wake-ups
    and context switches per byte (measured in bench/backup.py). Best effort: a pipe
    already closed (gpg that refused its key at once and exited) is left alone."""
    for stream in (proc.stdin, proc.stdout):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):  # ValueError: closed file
                _widen(pipe.fileno())


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


async def _feed(source: _Source, proc: asyncio.subprocess.Process, limit: int) -> None:
    """Write up to `limit` plaintext bytes into gpg, then close its input."""
    stdin = proc.stdin
    assert stdin is not None
    left = limit
    try:
        while left and (data := await source.take(min(left, READ_BLOCK))):
            stdin.write(data)
            await stdin.drain()
            left -= len(data)
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        # gpg stopped reading: its exit status and stderr say why (_gpg_result).
        pass


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    return await stream.read() if stream is not None else b""


async def _gpg_result(proc: asyncio.subprocess.Process, errors: asyncio.Task[bytes]) -> None:
    code = await proc.wait()
    if code != 0:
        text = (await errors).decode(errors="replace").strip().splitlines()
        raise BackupError(f"gpg --encrypt failed (exit {code}): {'; '.join(text[-3:])}")


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started it: task groups wrap it, and the cancellations it caused."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        err = stack.pop(0)
        if isinstance(err, BaseExceptionGroup):
            stack.extend(err.exceptions)
        else:
            leaves.append(err)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves)[0]


def _finished(draft: Manifest, chunks: list[Chunk], plain_bytes: int) -> Manifest:
    return dataclasses.replace(draft, chunks=tuple(chunks), plain_bytes=plain_bytes)


async def _delete_all(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        await store.delete(key)


async def _shielded(cleanup: Any) -> None:
    """Run a cleanup to its end even while the caller is being cancelled; a failing
    cleanup is logged (the error that got us here is the one to raise)."""
    task = asyncio.ensure_future(_bounded(cleanup))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except Exception as err:
        _log().warning("backup.cleanup_failed", error=str(err))


async def _bounded(cleanup: Any) -> None:
    async with asyncio.timeout(_CLEANUP_TIMEOUT):
        await cleanup


async def command_stream(argv: list[str]) -> AsyncIterator[bytes]:
    """A command's standard output as a stream; a non-zero exit raises BackupError at
    the end (a dump cut short must not pass for a whole one). Closing the stream early
    kills the command."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=_READER_LIMIT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        while data := await proc.stdout.read(_TAKE_ALL):
            yield data
        code = await proc.wait()
        if code != 0:
            tail = (await errors).decode(errors="replace").strip().splitlines()[-3:]
            raise BackupError(f"{argv[0]} failed (exit {code}): {'; '.join(tail)}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not errors.done():
            errors.cancel()
        await asyncio.gather(errors, return_exceptions=True)
