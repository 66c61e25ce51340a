"""The backup pipeline's throughput against plain gpg, and its memory against stream size.

    ./dev bench backup --sizes 256,1024 --out bench/results/backup.json

For each size (MiB), in fresh child processes so each peak RSS is its own:
- **gpg**: the same bytes fed to `gpg --encrypt` (same flags as the pipeline:
  public key only, `--compress-algo none`), output to /dev/null: the ceiling;
- **pipeline**: `Pipeline.run` (gpg -> SHA-256 -> 5 MiB parts -> S3 multipart) to a
  moto_server on loopback, in its own process.
The source is a 16 MiB buffer of random bytes sent over and over in 1 MiB blocks
(incompressible, like a `pg_dump -Fc`, and cheap to produce). Reported: MB/s of each,
pipeline/gpg, the child's CPU seconds (itself and its gpg children), and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import emit, machine, measure_table

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
    from drwatch.backup.pipeline import widen_pipes

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
        started = time.perf_counter()
        manifest = await Pipeline(rcpt).run(source(total), store, target, now=time.time())
        elapsed = time.perf_counter() - started
        for c in manifest.chunks:  # keep moto's memory from growing across runs
            await store.delete(manifest.prefix("drwatch") + c.name)
    print(json.dumps({"elapsed": elapsed, "chunks": len(manifest.chunks), **_rss()}))
    return 0


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
    started = time.perf_counter()
    store: Any = DiscardStore()
    manifest = await Pipeline(rcpt).run(source(total), store, target, now=time.time())
    elapsed = time.perf_counter() - started
    print(json.dumps({"elapsed": elapsed, "chunks": len(manifest.chunks), **_rss()}))
    return 0


async def run_upload(total: int, endpoint: str) -> int:
    """The same bytes as a plain multipart upload (no gpg, no hashing): moto's ceiling."""
    from drwatch.backup.config import Location
    from drwatch.backup.pipeline import Upload
    from drwatch.backup.store import S3Store

    loc = Location(bucket="bench-backups", region="us-east-1", endpoint=endpoint)
    async with S3Store("primary", loc) as store:
        await store.ensure_bucket()
        started = time.perf_counter()
        await Upload(store, "plain/object", 5 * MIB, 2).pump(source(total))
        elapsed = time.perf_counter() - started
        await store.delete("plain/object")
    print(json.dumps({"elapsed": elapsed, **_rss()}))
    return 0


def child(args: argparse.Namespace) -> int:
    total = args.one * MIB
    home = Path(args.home)
    if args.mode == "gpg":
        from drwatch.backup.gpg import Recipient

        rcpt = asyncio.run(
            Recipient.load("gpg", Path(args.public), args.fpr, home, now=time.time())
        )
        started = time.perf_counter()
        asyncio.run(run_gpg(total, rcpt.encrypt_argv("none")))
        print(json.dumps({"elapsed": time.perf_counter() - started, **_rss()}))
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
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**result, "cpu_s": cpu, "mb_s": size * MIB / 1e6 / result["elapsed"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="256,1024", help="stream sizes in MiB, comma-separated")
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
    return parent([int(s) for s in args.sizes.split(",")], args.out)


def parent(sizes: list[int], out: Path | None) -> int:
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
            # Each size runs gpg and the pipeline alternately, so neighbours' load hits both.
            plain = measure("gpg", size, fpr, public, endpoint, home)
            piped = measure("pipeline", size, fpr, public, endpoint, home)
            upload = measure("upload", size, fpr, public, endpoint, home)
            discard = measure("discard", size, fpr, public, endpoint, home)
            ratio = piped["mb_s"] / plain["mb_s"]
            runs.append(
                {
                    "size_mib": size,
                    "gpg": plain,
                    "pipeline": piped,
                    "upload": upload,
                    "discard": discard,
                    "ratio": ratio,
                }
            )
            rows += [
                (
                    f"{size} MiB: plain gpg --encrypt",
                    f"{plain['mb_s']:.0f} MB/s, "
                    f"{plain['cpu_s']:.1f} CPU s, peak RSS {plain['rss_mib']:.0f} MiB",
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
                (f"{size} MiB: pipeline / gpg", f"{ratio:.0%}"),
                (
                    f"{size} MiB: pipeline to a discarding store",
                    f"{discard['mb_s']:.0f} MB/s, "
                    f"{discard['cpu_s']:.1f} CPU s, peak RSS {discard['rss_mib']:.0f} MiB",
                ),
                (
                    f"{size} MiB: discarding pipeline / gpg",
                    f"{discard['mb_s'] / plain['mb_s']:.0%}",
                ),
            ]
    result = {"machine": machine(gpg=_gpg_version()), "runs": runs}
    emit(measure_table(rows), result, out)
    return 0


def _gpg_version() -> str:
    out = subprocess.run(["gpg", "--version"], capture_output=True, check=True).stdout
    return out.decode().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
