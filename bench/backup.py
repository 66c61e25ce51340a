"""The backup pipeline's throughput against plain gpg, and its memory against stream size.

    ./dev bench backup --sizes 256,1024,2048 --repeat 3 --out bench/results/backup.json

For each size (MiB), in fresh child processes so each peak RSS is its own:
- **gpg**: the same bytes fed to `gpg --encrypt` (same flags as the pipeline:
  public key only, `--compress-algo none`), output to /dev/null: the ceiling;
- **pipeline**: `Pipeline.run` (gpg -> SHA-256 -> 5 MiB parts -> S3 multipart) to a
  moto_server on loopback, in its own process.
- **upload**: the same bytes as a plain multipart upload to moto (no gpg): moto's ceiling;
- **discard**: `Pipeline.run` to a store that drops every part: the pipeline's own cost.
The source is a 16 MiB buffer of random bytes sent over and over in 1 MiB blocks
(incompressible, like a `pg_dump -Fc`, and cheap to produce). Reported: MB/s of each,
pipeline/gpg by wall clock and per CPU second (gpg's CPU seconds over the pipeline's:
the steadier figure on a shared machine), CPU seconds of the measured section alone
(all the child's threads and its gpg; the interpreter's start and imports left out),
the event loop thread's share of them, peak RSS, and the load average around each size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import emit, machine, measure_table

# At the top, so every mode has imported the pipeline's modules before its clock starts
# (imported inside plain gpg's run, aiobotocore's import was counted against gpg).
from drwatch.backup.pipeline import widen_pipes

MIB = 1024 * 1024
BLOCK = MIB
_POOL = os.urandom(16 * MIB)


async def source(total: int) -> AsyncIterator[bytes]:
    view = memoryview(_POOL)
    sent = 0
    while sent < total:
        at = sent % len(_POOL)
        n = min(BLOCK, total - sent, len(_POOL) - at)
        yield bytes(view[at : at + n])
        sent += n


def make_key(root: Path) -> tuple[str, Path]:
    home = root / "key"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "bench <b@example.org>", "ed25519", "cert", "never"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True
    ).stdout.decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    subprocess.run(
        [*gpg, "--quick-add-key", fpr, "cv25519", "encr", "never"], check=True, capture_output=True
    )
    public = root / "key.pub.gpg"
    public.write_bytes(
        subprocess.run([*gpg, "--export", fpr], check=True, capture_output=True).stdout
    )
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    return fpr, public


async def run_gpg(total: int, argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    assert proc.stdin is not None
    widen_pipes(proc)  # the same 1 MiB pipe as the pipeline gets: a like-for-like ceiling
    async for block in source(total):
        proc.stdin.write(block)
        await proc.stdin.drain()
    proc.stdin.close()
    if await proc.wait() != 0:
        raise RuntimeError("gpg failed")


async def run_pipeline(total: int, fpr: str, public: Path, endpoint: str, home: Path) -> int:
    from drwatch.backup.config import Location
    from drwatch.backup.gpg import Recipient
    from drwatch.backup.pipeline import Pipeline, Target
    from drwatch.backup.store import S3Store

    rcpt = await Recipient.load("gpg", public, fpr, home, now=time.time())
    loc = Location(bucket="bench-backups", region="us-east-1", endpoint=endpoint)
    async with S3Store("primary", loc) as store:
        await store.ensure_bucket()
        target = Target("bench", "dump", "drwatch", {}, {})
        clock = _Clock()
        manifest = await Pipeline(rcpt).run(source(total), store, target, now=time.time())
        spent = clock.spent()
        for c in manifest.chunks:  # keep moto's memory from growing across runs
            await store.delete(manifest.prefix("drwatch") + c.name)
    print(json.dumps({**spent, "chunks": len(manifest.chunks), **_rss()}))
    return 0


class _Clock:
    """Wall clock and CPU seconds of the measured section alone (not the interpreter's
    start or imports): this process's threads, and the children it reaped meanwhile (gpg).
    `loop_cpu_s` is the event loop's own thread."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._loop, self._kids = time.thread_time(), _children_cpu()

    def spent(self) -> dict[str, float]:
        kids = _children_cpu() - self._kids
        return {
            "elapsed": time.perf_counter() - self._wall,
            "cpu_s": time.process_time() - self._cpu + kids,
            "gpg_cpu_s": kids,
            "loop_cpu_s": time.thread_time() - self._loop,
        }


def _children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _rss() -> dict[str, float]:
    """Peak RSS of this process, and of the largest gpg it ran (MiB)."""
    return {
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpg_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


class DiscardStore:
    """An object store that takes every part and keeps nothing: the pipeline's own cost
    (gpg, SHA-256, part assembly) without the network or moto."""

    name = "discard"

    async def create_multipart(self, key: str) -> str:
        return "upload"

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        await asyncio.sleep(0)
        return f"etag-{number}"

    async def complete_multipart(self, key: str, upload_id: str, parts: object) -> None:
        return None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        return None

    async def put(self, key: str, data: bytes) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None


async def run_discard(total: int, fpr: str, public: Path, home: Path) -> int:
    from drwatch.backup.gpg import Recipient
    from drwatch.backup.pipeline import Pipeline, Target

    rcpt = await Recipient.load("gpg", public, fpr, home, now=time.time())
    target = Target("bench", "dump", "drwatch", {}, {})
    store: Any = DiscardStore()
    clock = _Clock()
    manifest = await Pipeline(rcpt).run(source(total), store, target, now=time.time())
    spent = clock.spent()
    print(json.dumps({**spent, "chunks": len(manifest.chunks), **_rss()}))
    return 0


async def run_upload(total: int, endpoint: str) -> int:
    """The same bytes as a plain multipart upload (no gpg, no hashing): moto's ceiling."""
    from drwatch.backup.config import Location
    from drwatch.backup.pipeline import Upload
    from drwatch.backup.store import S3Store

    loc = Location(bucket="bench-backups", region="us-east-1", endpoint=endpoint)
    async with S3Store("primary", loc) as store:
        await store.ensure_bucket()
        clock = _Clock()
        await Upload(store, "plain/object", 5 * MIB, 2).pump(source(total))
        spent = clock.spent()
        await store.delete("plain/object")
    print(json.dumps({**spent, **_rss()}))
    return 0


def child(args: argparse.Namespace) -> int:
    total = args.one * MIB
    home = Path(args.home)
    if args.mode == "gpg":
        from drwatch.backup.gpg import Recipient

        rcpt = asyncio.run(
            Recipient.load("gpg", Path(args.public), args.fpr, home, now=time.time())
        )
        clock = _Clock()
        asyncio.run(run_gpg(total, rcpt.encrypt_argv("none")))
        print(json.dumps({**clock.spent(), **_rss()}))
        return 0
    if args.mode == "discard":
        return asyncio.run(run_discard(total, args.fpr, Path(args.public), home))
    if args.mode == "upload":
        return asyncio.run(run_upload(total, args.endpoint))
    return asyncio.run(run_pipeline(total, args.fpr, Path(args.public), args.endpoint, home))


def measure(  # noqa: PLR0917
    mode: str, size: int, fpr: str, public: Path, endpoint: str, home: Path
) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.backup",
        "--one",
        str(size),
        "--mode",
        mode,
        "--fpr",
        fpr,
        "--public",
        str(public),
        "--endpoint",
        endpoint,
        "--home",
        str(home),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, check=False, capture_output=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {size} MiB failed: {done.stderr.decode()[-2000:]}")
    out = done.stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.decode().strip().splitlines()[-1])
    whole = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**result, "process_cpu_s": whole, "mb_s": size * MIB / 1e6 / result["elapsed"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="256,1024", help="stream sizes in MiB, comma-separated")
    p.add_argument(
        "--repeat", type=int, default=3, help="gpg/discard pairs per size (medians are quoted)"
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--fpr", help=argparse.SUPPRESS)
    p.add_argument("--public", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--home", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        return child(args)
    return parent([int(s) for s in args.sizes.split(",")], args.repeat, args.out)


def parent(sizes: list[int], repeat: int, out: Path | None) -> int:
    # moto only: dummy credentials, never a real account's.
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "bench"
    os.environ.pop("AWS_PROFILE", None)
    from tests.support.services import free_port, process, wait_http

    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    rows: list[tuple[str, str]] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, process([moto, "-H", "127.0.0.1", "-p", str(port)]):
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/")
        fpr, public = make_key(Path(tmp))
        home = Path(tmp) / "gnupg"
        for size in sizes:
            load_before = os.getloadavg()[0]
            # gpg and the discarding pipeline in turn, `repeat` pairs, so the neighbours'
            # load falls on both; ratios are taken pair by pair, and their median quoted.
            pairs = [
                (
                    measure("gpg", size, fpr, public, endpoint, home),
                    measure("discard", size, fpr, public, endpoint, home),
                )
                for _ in range(repeat)
            ]
            piped = measure("pipeline", size, fpr, public, endpoint, home)
            upload = measure("upload", size, fpr, public, endpoint, home)
            load = (load_before, os.getloadavg()[0])
            plain = _median_run([g for g, _ in pairs])
            discard = _median_run([d for _, d in pairs])
            own = statistics.median(d["mb_s"] / g["mb_s"] for g, d in pairs)
            own_cpu = statistics.median(g["cpu_s"] / d["cpu_s"] for g, d in pairs)
            loop_cpu = statistics.median(d["loop_cpu_s"] for _, d in pairs)
            ratio = piped["mb_s"] / plain["mb_s"]
            runs.append(
                {
                    "size_mib": size,
                    "load_average_1min": load,
                    "gpg": plain,
                    "discard": discard,
                    "pairs": [{"gpg": g, "discard": d} for g, d in pairs],
                    "pipeline": piped,
                    "upload": upload,
                    "ratio": ratio,
                    "discard_ratio": own,
                    "discard_ratio_per_cpu_s": own_cpu,
                }
            )
            rows += [
                (
                    f"{size} MiB: plain gpg --encrypt (median of {repeat})",
                    f"{plain['mb_s']:.0f} MB/s, {plain['cpu_s']:.1f} CPU s "
                    f"(gpg {plain['gpg_cpu_s']:.1f}), peak RSS {plain['rss_mib']:.0f} MiB",
                ),
                (
                    f"{size} MiB: pipeline to a discarding store (median of {repeat})",
                    f"{discard['mb_s']:.0f} MB/s, {discard['cpu_s']:.1f} CPU s "
                    f"(gpg {discard['gpg_cpu_s']:.1f}, event-loop thread {loop_cpu:.1f}), "
                    f"peak RSS {discard['rss_mib']:.0f} MiB",
                ),
                (
                    f"{size} MiB: discarding pipeline / gpg (median of pairs)",
                    f"{own:.0%} by wall clock, {own_cpu:.0%} per CPU second",
                ),
                (
                    f"{size} MiB: pipeline to moto",
                    f"{piped['mb_s']:.0f} MB/s, "
                    f"{piped['cpu_s']:.1f} CPU s, peak RSS {piped['rss_mib']:.0f} MiB "
                    f"(gpg {piped['gpg_rss_mib']:.0f} MiB), "
                    f"{piped['chunks']} chunk(s)",
                ),
                (
                    f"{size} MiB: plain multipart upload to moto (no gpg)",
                    f"{upload['mb_s']:.0f} MB/s, {upload['cpu_s']:.1f} CPU s",
                ),
                (f"{size} MiB: pipeline to moto / gpg", f"{ratio:.0%}"),
                (f"{size} MiB: load average (1 min)", f"{load[0]:.1f} -> {load[1]:.1f}"),
            ]
    result = {"machine": machine(gpg=_gpg_version()), "repeat": repeat, "runs": runs}
    emit(measure_table(rows), result, out)
    return 0


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (its own CPU seconds and RSS, not mixed with others')."""
    ordered = sorted(results, key=lambda r: float(r["mb_s"]))
    return ordered[(len(ordered) - 1) // 2]


def _gpg_version() -> str:
    out = subprocess.run(["gpg", "--version"], capture_output=True, check=True).stdout
    return out.decode().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
