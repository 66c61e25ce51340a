"""gpg's output cut into parts straight from its pipe: part boundaries, the last part, the
hash computed off the loop, and the order the store sees."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from drwatch.backup.pipeline import Upload, _PipeParts, widen_pipes

PART = 4096


class RecordingStore:
    """Keeps every call, in order, and every part's bytes."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.parts: dict[int, bytes] = {}

    async def create_multipart(self, key: str) -> str:
        self.calls.append("create")
        return "upload-1"

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        await asyncio.sleep(0)
        self.calls.append(f"part {number} ({len(data)})")
        self.parts[number] = data
        return f"etag-{number}"

    async def complete_multipart(self, key: str, upload_id: str, parts: object) -> None:
        self.calls.append("complete")

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self.calls.append("abort")


def pipe_with(data: bytes) -> int:
    """The read end of a pipe that a thread fills with `data` (in uneven writes), then closes."""
    read, write = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read, False)

    def fill() -> None:
        view, at, step = memoryview(data), 0, 1000
        while at < len(data):
            at += os.write(write, view[at : at + step])
            step = 3000 if step == 1000 else 1000
        os.close(write)

    threading.Thread(target=fill, daemon=True).start()
    return read


@pytest.mark.parametrize(
    ("size", "full", "last"),
    [
        (3 * PART, 3, None),  # an exact multiple: no empty part at the end
        (2 * PART + 100, 2, "part 3 (100)"),
        (0, 0, "part 1 (0)"),  # an object has at least one part
    ],
)
async def test_parts_are_cut_exactly_and_hashed_in_order(
    size: int, full: int, last: str | None
) -> None:
    data = os.urandom(size)
    store = RecordingStore()
    fd = pipe_with(data)
    parts = _PipeParts(fd, PART)
    upload = Upload(store, "k", PART, 2)  # type: ignore[arg-type]

    async def finished() -> None:
        store.calls.append("finished")

    try:
        await upload.pump_parts(parts, finished)
    finally:
        os.close(fd)
    # The upload is created lazily: at the first full part, or once gpg has finished.
    assert store.calls[0] == ("create" if full else "finished")
    assert store.calls[-1] == "complete"
    sent = [c for c in store.calls if c.startswith("part")]
    assert sent == [f"part {n} ({PART})" for n in range(1, full + 1)] + ([last] if last else [])
    if last is not None:  # the short last part goes only once gpg has finished cleanly
        assert store.calls.index("finished") < store.calls.index(last)
    assert b"".join(store.parts[n] for n in sorted(store.parts)) == data
    assert parts.size == size
    assert await parts.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_refusal_after_the_last_byte_sends_no_last_part_and_no_completion() -> None:
    data = os.urandom(PART + 10)
    store = RecordingStore()
    fd = pipe_with(data)
    upload = Upload(store, "k", PART, 2)  # type: ignore[arg-type]

    async def refuse() -> None:
        raise RuntimeError("gpg exited 2")

    try:
        with pytest.raises(RuntimeError, match="gpg exited 2"):
            await upload.pump_parts(_PipeParts(fd, PART), refuse)
        await upload.abort()  # as the pipeline does: the part in flight settles first
    finally:
        os.close(fd)
    assert store.calls == ["create", "part 1 (4096)", "abort"]


async def test_widening_a_pipe_already_closed_is_left_alone() -> None:
    """gpg that refuses its key exits at once: by the time the pipes are widened, its
    stdin may be closed. That is no error of the pipeline's (gpg's own is reported)."""
    proc = await asyncio.create_subprocess_exec(
        "true", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None
    pipe = proc.stdin.transport.get_extra_info("pipe")
    pipe.close()  # the file object closed under the transport: fileno() raises ValueError
    with pytest.raises(ValueError, match="closed file"):
        pipe.fileno()
    widen_pipes(proc)
    await proc.wait()
