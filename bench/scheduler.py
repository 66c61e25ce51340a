"""Benchmark: drwatch's CheckScheduler + HttpProbe against raw aiohttp, on one core.

    ./dev bench scheduler --targets 10000 --interval 5 --duration 30 --out r.json

A target server runs in its own process pinned to the other core and answers every
path. Each target has its own host name (a resolver maps `tN.bench` to 127.0.0.1), so,
as with 10,000 real hosts, every target keeps its own kept-alive connection. Phases:

  warm-up    one GET per target opens every connection (not measured)
  raw        a tight loop of GETs, bounded concurrency: the ceiling on this machine
  schedule   the real CheckScheduler + HttpProbe + HealthStore, N targets at the interval:
             checks/s achieved vs due, schedule lag p50/p99, CPU seconds, RSS
  max        the same, with an interval short enough to saturate: checks/s as % of raw
  naive      (with --naive) one asyncio task per job sleeping between checks, for comparison

Not a test: nothing here asserts. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import math
import multiprocessing
import os
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bench.common import emit, machine, measure_table
from drwatch import logs
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.scheduler import CheckJob, CheckScheduler, first_due
from drwatch.observe.store import HealthStore
from drwatch.probes import HttpConditions, HttpProbe, new_session

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def pin(cpu: int) -> str:
    """Pin this process to one core when the machine has it; say what happened."""
    try:
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
            return f"cpu {cpu}"
    except (AttributeError, OSError) as err:
        return f"not pinned ({err})"
    return "not pinned (one core)"


# -- the target server, in its own process ---------------------------------------------


class _FastHttp(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 responder: one canned answer per request head."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        heads = self.buf.count(b"\r\n\r\n")
        if heads:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * heads)


async def _serve(port: int, kind: str) -> None:
    if kind == "aiohttp":

        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    else:
        loop = asyncio.get_running_loop()
        await loop.create_server(_FastHttp, "127.0.0.1", port, backlog=4096)
    # Serve until the parent terminates this process (it is a daemon process of the bench).
    await asyncio.get_running_loop().create_future()


def serve(port: int, kind: str, cpu: int) -> None:
    pin(cpu)
    asyncio.run(_serve(port, kind))


class LoopbackResolver(AbstractResolver):
    """Every name is 127.0.0.1: many target names, one loopback server."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


# -- measurement helpers -----------------------------------------------------------------


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * (len(ordered) - 1)))]


async def wait_port(port: int, deadline_s: float = 20.0) -> None:
    async with asyncio.timeout(deadline_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def fan_out(
    urls: list[str], concurrency: int, fetch: Callable[[str], Awaitable[None]]
) -> None:
    it = iter(urls)

    async def worker() -> None:
        for url in it:
            await fetch(url)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())


# -- phases ----------------------------------------------------------------------------------


async def raw_phase(
    session: aiohttp.ClientSession, urls: list[str], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Plain aiohttp GETs in a tight loop: the ceiling the scheduler is compared with."""
    loop = asyncio.get_running_loop()
    cycle = itertools.cycle(urls)
    done = 0
    stop = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        while loop.time() < stop:
            async with session.get(next(cycle)) as resp:
                await resp.read()
            done += 1

    cpu0, t0 = cpu_seconds(), time.monotonic()
    async with asyncio.timeout(seconds + 60), asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    return {
        "checks_per_s": done / wall,
        "checks_per_cpu_s": done / cpu,
        "cpu_s": cpu,
        "cpu_share": cpu / wall,
        "wall_s": wall,
    }


@dataclass(frozen=True)
class Phase:
    interval: float
    timeout_s: float
    concurrency: int
    seconds: float


def make_jobs(
    probe: HttpProbe, urls: list[str], interval: float, timeout_s: float
) -> dict[str, CheckJob]:
    cond = HttpConditions(expect_status=(200,), body_contains="ok")
    jobs = {}
    for i, url in enumerate(urls):
        target = f"i-{i:05d}"

        async def run(url: str = url, target: str = target) -> Observation:
            attempted_at = time.time()
            result = await probe.check(url, cond, timeout_s)
            return result.observation(target, Layer.APP, attempted_at)

        key = f"app:{target}"
        jobs[key] = CheckJob(key, interval, timeout_s, run, Layer.APP, target)
    return jobs


async def schedule_phase(probe: HttpProbe, urls: list[str], ph: Phase) -> dict[str, Any]:
    """The real scheduler, probe and store over every target for `seconds`."""
    store = HealthStore({Layer.APP: (2, 3)})
    counts = {"done": 0, "up": 0}

    def sink(obs: Observation) -> None:
        counts["done"] += 1
        counts["up"] += obs.health is Health.UP
        store.record(obs)

    sched = CheckScheduler(ph.concurrency, sink, lag_window=2_000_000)
    sched.set_jobs(make_jobs(probe, urls, ph.interval, ph.timeout_s))
    cpu0, t0 = cpu_seconds(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sched.run())
        await asyncio.sleep(ph.seconds)
        wall = time.monotonic() - t0
        done, up, cpu = counts["done"], counts["up"], cpu_seconds() - cpu0
        stats = sched.lag_stats()
        task.cancel()
    return {
        "interval_s": ph.interval,
        "due_per_s": len(urls) / ph.interval,
        "checks_per_s": done / wall,
        "checks_per_cpu_s": done / cpu if cpu else 0.0,
        "up_share": up / done if done else 0.0,
        "lag_p50_ms": stats.p50 * 1000,
        "lag_p99_ms": stats.p99 * 1000,
        "lag_max_ms": stats.max * 1000,
        "skipped": stats.skipped,
        "timeouts": stats.timeouts,
        "cpu_s": cpu,
        "cpu_share": cpu / wall,
        "rss_mb": rss_mb(),
        "wall_s": wall,
    }


async def naive_phase(probe: HttpProbe, urls: list[str], ph: Phase) -> dict[str, Any]:
    """The design the scheduler avoids: one task per job, sleeping until its next slot."""
    jobs = make_jobs(probe, urls, ph.interval, ph.timeout_s)
    sem = asyncio.Semaphore(ph.concurrency)
    lags: list[float] = []
    done = 0

    async def loop_job(job: CheckJob) -> None:
        nonlocal done
        due = first_due(job.key, job.interval, time.monotonic())
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            async with sem:
                lags.append(time.monotonic() - due)
                async with asyncio.timeout(job.timeout):
                    await job.run()
            done += 1
            due += job.interval * max(1, math.ceil((time.monotonic() - due) / job.interval))

    rss0, cpu0, t0 = rss_mb(), cpu_seconds(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(loop_job(j)) for j in jobs.values()]
        await asyncio.sleep(ph.seconds)
        wall = time.monotonic() - t0
        result = {
            "checks_per_s": done / wall,
            "lag_p50_ms": percentile(lags, 0.5) * 1000,
            "lag_p99_ms": percentile(lags, 0.99) * 1000,
            "cpu_s": cpu_seconds() - cpu0,
            "rss_growth_mb": rss_mb() - rss0,
        }
        for t in tasks:
            t.cancel()
    return result


# -- the run ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, port: int) -> dict[str, Any]:
    await wait_port(port)
    if args.shared_host:
        urls = [f"http://127.0.0.1:{port}/t/{i}" for i in range(args.targets)]
    else:
        urls = [f"http://t{i}.bench:{port}/t/{i}" for i in range(args.targets)]
    session = new_session(limit=args.concurrency, resolver=LoopbackResolver())
    probe = HttpProbe(session)
    out: dict[str, Any] = {}
    try:
        async with asyncio.timeout(120):

            async def get(url: str) -> None:
                async with session.get(url) as resp:
                    await resp.read()

            await fan_out(urls, args.concurrency, get)
        rss_connected = rss_mb()
        if args.gc_freeze:
            # What a daemon can do once its fleet is discovered and connected: the
            # long-lived objects leave the collector's view, so full collections (the
            # source of the worst schedule lag) scan only what changed since.
            gc.collect()
            gc.freeze()
        if args.gc_threshold:
            # Fewer, larger young-generation collections: at thousands of checks a second
            # the default (700) runs one every few hundred checks.
            gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
        out["raw"] = await raw_phase(session, urls, args.concurrency, args.raw_seconds)
        steady = Phase(args.interval, args.timeout, args.concurrency, args.duration)
        out["schedule"] = await schedule_phase(probe, urls, steady)
        out["schedule"]["rss_after_warmup_mb"] = rss_connected
        raw_rate = out["raw"]["checks_per_s"]
        # Due 30% faster than the raw ceiling: the scheduler is saturated, never idle.
        fast = max(0.05, args.targets / (raw_rate * 1.3))
        saturated = Phase(fast, min(args.timeout, fast * 0.9), args.concurrency, args.max_seconds)
        out["max"] = await schedule_phase(probe, urls, saturated)
        out["max"]["share_of_raw"] = out["max"]["checks_per_s"] / raw_rate
        out["max"]["share_of_raw_per_cpu_s"] = (
            out["max"]["checks_per_cpu_s"] / out["raw"]["checks_per_cpu_s"]
        )
        if args.naive:
            out["naive"] = await naive_phase(probe, urls, steady)
    finally:
        await session.close()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def table(res: dict[str, Any]) -> str:
    s, m, r = res["schedule"], res["max"], res["raw"]
    rows = [
        (
            "raw aiohttp keep-alive: checks/s (per CPU second)",
            f"{r['checks_per_s']:,.0f} ({r['checks_per_cpu_s']:,.0f})",
        ),
        (
            f"scheduled: due checks/s ({res['targets']:,} x {s['interval_s']:g}s)",
            f"{s['due_per_s']:,.0f}",
        ),
        ("scheduled: achieved checks/s", f"{s['checks_per_s']:,.0f}"),
        (
            "scheduled: schedule lag p50 / p99 / max",
            f"{s['lag_p50_ms']:.1f} / {s['lag_p99_ms']:.1f} / {s['lag_max_ms']:.1f} ms",
        ),
        (
            "scheduled: CPU seconds (share of one core)",
            f"{s['cpu_s']:.1f} s ({s['cpu_share']:.0%})",
        ),
        ("scheduled: checks UP", f"{s['up_share']:.1%}"),
        ("saturated: interval", f"{m['interval_s']:.3f} s"),
        (
            "saturated: checks/s (share of raw)",
            f"{m['checks_per_s']:,.0f} ({m['share_of_raw']:.0%})",
        ),
        (
            "saturated: checks per CPU second (share of raw)",
            f"{m['checks_per_cpu_s']:,.0f} ({m['share_of_raw_per_cpu_s']:.0%})",
        ),
        ("saturated: lag p99, timeouts", f"{m['lag_p99_ms']:.0f} ms, {m['timeouts']}"),
        (
            "RSS after warm-up / peak",
            f"{s['rss_after_warmup_mb']:.0f} / {res['peak_rss_mb']:.0f} MB",
        ),
    ]
    if "naive" in res:
        n = res["naive"]
        rows.append(
            ("naive task-per-job: lag p99, CPU s", f"{n['lag_p99_ms']:.1f} ms, {n['cpu_s']:.1f} s")
        )
    return measure_table(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--targets", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of the scheduled phase")
    p.add_argument("--raw-seconds", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--server", choices=("fast", "aiohttp"), default="fast")
    p.add_argument(
        "--shared-host", action="store_true", help="all targets on one host (shared pool)"
    )
    p.add_argument("--naive", action="store_true", help="also measure one task per job")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up")
    p.add_argument("--gc-threshold", type=int, default=0, help="gen-0 GC threshold after warm-up")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Transitions of 10,000 targets would drown the table; errors still show.
    logs.configure("console", "error")
    with target_server(args.server, cpu=1) as port:
        pinned = pin(0)
        res = asyncio.run(bench(args, port))
    res.update(
        targets=args.targets,
        gc_freeze=args.gc_freeze,
        gc_threshold=gc.get_threshold()[0],
        server=args.server,
        client_pinned=pinned,
        machine=machine(),
        command="python -m bench.scheduler " + " ".join(argv),
    )
    emit(table(res), res, args.out)
    return 0


@contextlib.contextmanager
def target_server(kind: str, cpu: int) -> Iterator[int]:
    """The target server in a process of its own, pinned to `cpu`; yields its port."""
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, kind, cpu), daemon=True
    )
    server.start()
    try:
        yield port
    finally:
        server.terminate()
        server.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
