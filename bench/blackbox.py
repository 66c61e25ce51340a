"""Benchmark: HTTP checks per CPU second, drwatch against Prometheus's blackbox_exporter.

    apt-get install -y prometheus-blackbox-exporter     # bench only, not a dependency
    .venv/bin/python -m bench.blackbox --out bench/results/blackbox.json

Run it as a module from the repository root: it imports the target server, the resolver
and the phases of bench/scheduler.py. Phases, one after the other, same machine:

  blackbox   prometheus-blackbox-exporter in its own process pinned to core 0
             (GOMAXPROCS=1), an `http_2xx` module in a temp config (GET, status 200,
             body must match `ok`, no redirects, IPv4). This process, pinned to core 1
             next to the target server, drives `/probe?module=http_2xx&target=URL` over
             `--targets` URLs with `--bb-concurrency` probes in flight for `--bb-seconds`
             (after a short unmeasured warm-up). Measured: probes/s completed and the
             exporter's CPU seconds (utime + stime of /proc/PID/stat, all its threads).
  drwatch    this process pinned to core 0, the target server on core 1, the GC set as
             the daemon sets it (freeze after warm-up, gen-0 threshold 10,000; `--default-gc`
             leaves it alone): bench/scheduler.py's raw and saturated phases, keep-alive,
             10,000 targets each with its own host name and connection. Measured: checks
             per CPU second of this process.
  fresh      the same saturated scheduler with aiohttp's `force_close`: a new TCP
             connection per check, as blackbox_exporter makes per probe.

What is and is not comparable:

- blackbox_exporter 0.23 builds a new HTTP client and transport for every probe
  (prober/http.go), so every probe opens a new TCP connection to its target; there is no
  setting to keep connections alive between probes. drwatch keeps one connection per
  target alive, which is what DESIGN.md's target ("keep-alive, 10,000 targets") asks.
  The `fresh` phase is the like-for-like line: drwatch with a new connection per check.
- A blackbox probe's CPU also covers serving the `/probe` request itself (the driver keeps
  its connections to the exporter alive) and rendering the probe's metrics, about 2 KB
  of text per probe: that is how blackbox_exporter is used (each probe is a Prometheus
  scrape), and drwatch has no such step (its results stay in process). The driver's own
  CPU is not counted: it runs on the other core.
- Targets are IP literals (`127.0.0.1:PORT/t/N`), so the exporter does no DNS lookups;
  drwatch's names resolve through an in-process resolver that maps every name to loopback.
- Both check status 200 and the body for `ok`; neither follows redirects; plain HTTP.
- Per CPU second is the comparison: the machine is shared and wall-clock rates move with
  the neighbours. The target server runs on the other core in every phase.

Not a test: nothing here asserts. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from bench.common import emit, machine, measure_table
from bench.scheduler import (
    LoopbackResolver,
    Phase,
    _free_port,
    fan_out,
    pin,
    raw_phase,
    schedule_phase,
    target_server,
    wait_port,
)
from drwatch import logs
from drwatch.probes import HttpProbe, new_session

EXPORTER = "prometheus-blackbox-exporter"
# The module blackbox_exporter runs for every probe: the conditions bench/scheduler.py's
# jobs check (status 200, body contains "ok"), no redirects, IPv4 only.
CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      method: GET
      valid_status_codes: [200]
      follow_redirects: false
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      fail_if_body_not_matches_regexp: ["ok"]
"""
BB_CPU, TARGET_CPU = 0, 1


# -- blackbox_exporter --------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def exporter_version(exe: str) -> str:
    out = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


@contextlib.contextmanager
def exporter(port: int, timeout_s: float, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """blackbox_exporter on 127.0.0.1:`port`, pinned to BB_CPU, stopped on exit."""
    exe = shutil.which(EXPORTER)
    if exe is None:
        raise SystemExit(f"{EXPORTER} not found: apt-get install -y prometheus-blackbox-exporter")
    config = workdir / "blackbox.yml"
    config.write_text(CONFIG.format(timeout=timeout_s))
    argv = [
        exe,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if shutil.which("taskset") and (os.cpu_count() or 1) > BB_CPU:
        # taskset pins, then execs the exporter: every thread the Go runtime starts inherits it.
        argv = ["taskset", "-c", str(BB_CPU), *argv]
    env = {**os.environ, "GOMAXPROCS": "1"}
    log = (workdir / "exporter.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def drive(
    bb_port: int, targets: list[str], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Probe every target through the exporter in a loop for `seconds`: counts and outcomes."""
    loop = asyncio.get_running_loop()
    urls = [
        URL.build(
            scheme="http",
            host="127.0.0.1",
            port=bb_port,
            path="/probe",
            query={"module": "http_2xx", "target": t},
        )
        for t in targets
    ]
    counts = {"done": 0, "success": 0, "http_errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = loop.time() + seconds

        async def worker(start: int) -> None:
            i = start
            while loop.time() < stop:
                async with session.get(urls[i % len(urls)]) as resp:
                    body = await resp.read()
                counts["done"] += 1
                if resp.status != 200:
                    counts["http_errors"] += 1
                elif b"\nprobe_success 1" in body:
                    counts["success"] += 1
                i += concurrency

        async with asyncio.timeout(seconds + 60), asyncio.TaskGroup() as tg:
            for n in range(concurrency):
                tg.create_task(worker(n))
    return counts


async def blackbox_phase(args: argparse.Namespace, target_port: int) -> dict[str, Any]:
    await wait_port(target_port)
    targets = [f"http://127.0.0.1:{target_port}/t/{i}" for i in range(args.targets)]
    bb_port = _free_port()
    with (
        tempfile.TemporaryDirectory(prefix="drwatch-bb-") as tmp,
        exporter(bb_port, args.timeout, Path(tmp)) as proc,
    ):
        await wait_port(bb_port)
        exe = shutil.which(EXPORTER) or EXPORTER
        # Unmeasured warm-up: the Go runtime sizes its heap, the driver opens its connections.
        await drive(bb_port, targets, args.bb_concurrency, args.bb_warmup)
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        counts = await drive(bb_port, targets, args.bb_concurrency, args.bb_seconds)
        wall = time.monotonic() - t0
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        rss = proc_rss_mb(proc.pid)
        affinity = sorted(os.sched_getaffinity(proc.pid))
        if proc.poll() is not None:
            raise SystemExit(f"{EXPORTER} exited early: see {tmp}/exporter.log")
    done = counts["done"]
    return {
        "version": exporter_version(exe),
        "probes": done,
        "success_share": counts["success"] / done if done else 0.0,
        "http_errors": counts["http_errors"],
        "probes_per_s": done / wall,
        "probes_per_cpu_s": done / cpu if cpu else 0.0,
        "cpu_s": cpu,
        "cpu_share": cpu / wall,
        "rss_mb": rss,
        "affinity": affinity,
        "concurrency": args.bb_concurrency,
        "wall_s": wall,
    }


# -- drwatch, in this process ------------------------------------------------------------


def fresh_session(limit: int) -> aiohttp.ClientSession:
    """Like `new_session()`, but every request opens (and then closes) its own connection."""
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=0, force_close=True, resolver=LoopbackResolver()
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def saturate(
    session: aiohttp.ClientSession, urls: list[str], args: argparse.Namespace, raw_s: float
) -> dict[str, Any]:
    """bench/scheduler.py's raw phase, then its saturated phase (due 30% faster than raw)."""
    raw = await raw_phase(session, urls, args.concurrency, raw_s)
    fast = max(0.05, len(urls) / (raw["checks_per_s"] * 1.3))
    phase = Phase(fast, min(args.timeout, fast * 0.9), args.concurrency, args.max_seconds)
    sat = await schedule_phase(HttpProbe(session), urls, phase)
    sat["share_of_raw_per_cpu_s"] = sat["checks_per_cpu_s"] / raw["checks_per_cpu_s"]
    return {"raw": raw, "saturated": sat}


async def drwatch_phases(args: argparse.Namespace, port: int) -> dict[str, Any]:
    await wait_port(port)
    urls = [f"http://t{i}.bench:{port}/t/{i}" for i in range(args.targets)]
    out: dict[str, Any] = {}
    session = new_session(limit=args.concurrency, resolver=LoopbackResolver())
    try:

        async def get(url: str) -> None:
            async with session.get(url) as resp:
                await resp.read()

        async with asyncio.timeout(120):
            await fan_out(urls, args.concurrency, get)  # warm-up: open every connection
        if not args.default_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, *gc.get_threshold()[1:])
        out["keepalive"] = await saturate(session, urls, args, args.raw_seconds)
    finally:
        await session.close()
    if args.fresh_seconds > 0:
        fresh = fresh_session(args.concurrency)
        try:
            out["fresh"] = await saturate(fresh, urls, args, args.fresh_seconds)
        finally:
            await fresh.close()
    return out


# -- the run -------------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    bb = res["blackbox"]
    bb_rate = bb["probes_per_cpu_s"] or float("nan")
    rows = [
        (
            "blackbox_exporter: probes/s (its CPU share of one core)",
            f"{bb['probes_per_s']:,.0f} ({bb['cpu_share']:.0%})",
        ),
        ("blackbox_exporter: probes per CPU second", f"**{bb_rate:,.0f}**"),
        (
            "blackbox_exporter: probes succeeded, RSS",
            f"{bb['success_share']:.1%}, {bb['rss_mb']:.0f} MB",
        ),
    ]
    names = {"keepalive": "keep-alive", "fresh": "new connection per check"}
    for key, name in names.items():
        if key not in res["drwatch"]:
            continue
        raw, sat = res["drwatch"][key]["raw"], res["drwatch"][key]["saturated"]
        rate, share = sat["checks_per_cpu_s"], sat["share_of_raw_per_cpu_s"]
        rows += [
            (f"raw aiohttp, {name}: checks per CPU second", f"{raw['checks_per_cpu_s']:,.0f}"),
            (
                f"drwatch saturated, {name}: checks/s (per CPU second, share of raw)",
                f"{sat['checks_per_s']:,.0f} (**{rate:,.0f}**, {share:.0%})",
            ),
            (f"drwatch {name} / blackbox_exporter, per CPU second", f"**{rate / bb_rate:.1f}x**"),
        ]
    return measure_table(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--targets", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=2.0, help="per check and per probe")
    p.add_argument("--bb-seconds", type=float, default=20.0, help="measured blackbox load")
    p.add_argument("--bb-warmup", type=float, default=3.0)
    p.add_argument("--bb-concurrency", type=int, default=64, help="probes in flight")
    p.add_argument("--concurrency", type=int, default=100, help="drwatch checks in flight")
    p.add_argument("--raw-seconds", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=15.0, help="each saturated phase")
    p.add_argument(
        "--fresh-seconds", type=float, default=5.0, help="raw phase of `fresh` (0: skip it)"
    )
    p.add_argument("--default-gc", action="store_true", help="leave the GC as Python sets it")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logs.configure("console", "error")
    with target_server("fast", cpu=TARGET_CPU) as port:
        # The driver shares the target server's core: the exporter has core 0 to itself.
        driver_pinned = pin(TARGET_CPU)
        res: dict[str, Any] = {"blackbox": asyncio.run(blackbox_phase(args, port))}
        res["blackbox"]["driver_pinned"] = driver_pinned
        client_pinned = pin(BB_CPU)
        res["drwatch"] = asyncio.run(drwatch_phases(args, port))
        res["drwatch"]["client_pinned"] = client_pinned
    res.update(
        targets=args.targets,
        gc="default" if args.default_gc else "freeze + threshold 10,000",
        machine=machine(),
        command="python -m bench.blackbox " + " ".join(argv),
    )
    emit(table(res), res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
