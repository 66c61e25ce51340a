"""Restoring a backup: fetch its chunks, check them against the manifest, decrypt with
the private key, and stream the plaintext into a command (`pg_restore`), never to disk.

The private key is imported into a throwaway GNUPGHOME that `Decryptor` owns and
removes (its gpg-agent killed) when done. A chunk whose SHA-256 differs from the
manifest fails the restore after gpg has seen it (gpg's own integrity check, the MDC,
refuses a changed ciphertext too, usually first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from drwatch.backup.errors import BackupError
from drwatch.backup.manifest import Manifest
from drwatch.backup.pipeline import READ_BLOCK, widen_pipes
from drwatch.backup.proc import run_checked
from drwatch.backup.store import ObjectStore

_TIMEOUT = 60.0


class Decryptor:
    """gpg with the private key imported into its own home; use `async with`."""

    def __init__(self, gpg: str, private_key_file: Path) -> None:
        self._gpg = gpg
        self._key_file = private_key_file
        self._home = Path(tempfile.mkdtemp(prefix="drwatch-restore-"))

    async def __aenter__(self) -> Self:
        self._home.chmod(0o700)
        await _run(
            [self._gpg, "--homedir", str(self._home), "--batch", "--import", str(self._key_file)]
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(BackupError, OSError):
            await _run(["gpgconf", "--homedir", str(self._home), "--kill", "all"])
        shutil.rmtree(self._home, ignore_errors=True)

    def argv(self) -> list[str]:
        return [self._gpg, "--homedir", str(self._home), "--batch", "--quiet", "--decrypt"]


async def plaintext(
    store: ObjectStore, manifest: Manifest, root: str, decryptor: Decryptor
) -> AsyncIterator[bytes]:
    """The backup's plaintext, chunk after chunk, each checked and decrypted on the fly."""
    prefix = manifest.prefix(root)
    for chunk in manifest.chunks:
        proc = await asyncio.create_subprocess_exec(
            *decryptor.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        widen_pipes(proc)
        assert proc.stdout is not None
        assert proc.stderr is not None
        digest = hashlib.sha256()
        feeder = asyncio.create_task(
            _feed(store.read(prefix + chunk.name, READ_BLOCK), proc, digest.update)
        )
        errors = asyncio.create_task(proc.stderr.read())
        try:
            while data := await proc.stdout.read(4 * READ_BLOCK):
                yield data
            await feeder
            code = await proc.wait()
            if code != 0:
                text = (await errors).decode(errors="replace").strip().splitlines()[-2:]
                raise BackupError(f"{chunk.name}: gpg --decrypt failed: {'; '.join(text)}")
            if digest.hexdigest() != chunk.sha256:
                raise BackupError(f"{chunk.name}: SHA-256 differs from the manifest")
        finally:
            for task in (feeder, errors):
                task.cancel()
            await asyncio.gather(feeder, errors, return_exceptions=True)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _feed(
    data_in: AsyncIterable[bytes],
    proc: asyncio.subprocess.Process,
    update: Callable[[bytes], object],
) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        async for data in data_in:
            update(data)
            stdin.write(data)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # gpg stopped: its exit status says why


async def into_command(stream: AsyncIterable[bytes], argv: list[str]) -> str:
    """Feed the plaintext to a command's standard input (e.g. `pg_restore -d DB`); its
    output, or BackupError with its message when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    widen_pipes(proc)
    assert proc.stdin is not None
    assert proc.stdout is not None
    output = asyncio.create_task(proc.stdout.read())
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            async for data in stream:
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()
        code = await proc.wait()
        text = (await output).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        output.cancel()
        await asyncio.gather(output, return_exceptions=True)
    if code != 0:
        raise BackupError(f"{argv[0]} failed (exit {code}): {text.strip()[-500:]}")
    return text


async def _run(argv: list[str]) -> None:
    await run_checked(argv, _TIMEOUT, label=" ".join(argv[:1] + argv[-2:]))
