"""The early-warning pass (drwatch.assess.trends) at fleet scale: CPU per pass and per
instance, and how long the event loop stalls while the daemon runs it in its worker
thread (as drwatch.daemon does every 5 s).

./dev bench trends --instances 10000 --samples 360 --passes 5 --out bench/results/trends.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import emit, machine, measure_table
from drwatch.assess.trends import assess_trends
from drwatch.config import TrendsConfig
from drwatch.model.fleet import Instance, Role
from drwatch.model.samples import DiskSample, Sample


def fleet_history(n: int, samples: int) -> tuple[list[Instance], dict[str, tuple[Sample, ...]]]:
    """n instances, each with `samples` agent samples 5 s apart; one disk in ten grows."""
    insts = [
        Instance(f"i-{i:05d}", f"app-{i}", "us-east-1", "us-east-1a", Role.APP_SERVER, "app")
        for i in range(n)
    ]
    hist = {}
    for i, inst in enumerate(insts):
        growth = 10 * 2**20 if i % 10 == 0 else 0
        hist[inst.id] = tuple(
            Sample(
                at=k * 5.0,
                cpu_percent=12.0,
                memory_percent=50.0,
                disks=(DiskSample("/", 100 * 2**30, 50 * 2**30 + growth * k),),
            )
            for k in range(samples)
        )
    return insts, hist


async def loop_stall(run: Any) -> float:
    """The longest gap between 1 ms ticks of the event loop while `run` runs in a thread."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.to_thread(run)
    done.set()
    await task
    return worst


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=360, help="per instance (30 min at 5 s)")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    cfg = TrendsConfig()
    insts, hist = fleet_history(args.instances, args.samples)
    now = args.samples * 5.0
    cpu = []
    for _ in range(args.passes):
        t = time.process_time()
        report = assess_trends(insts, hist, now, cfg)
        cpu.append(time.process_time() - t)
    stalls = [
        asyncio.run(loop_stall(lambda: assess_trends(insts, hist, now, cfg)))
        for _ in range(args.passes)
    ]
    p50 = statistics.median(cpu)
    result = machine(
        instances=args.instances,
        samples=args.samples,
        passes=args.passes,
        cpu_per_pass_s=cpu,
        cpu_per_instance_us=p50 / args.instances * 1e6,
        loop_stall_s=stalls,
        warnings=len(report.diagnoses),
    )
    table = measure_table(
        [
            ("instances x samples", f"{args.instances:,} x {args.samples}"),
            ("CPU per pass, median (max)", f"{p50 * 1000:.0f} ms ({max(cpu) * 1000:.0f} ms)"),
            ("CPU per instance", f"{p50 / args.instances * 1e6:.0f} µs"),
            ("event-loop stall, pass in a thread, median (max)",
             f"{statistics.median(stalls) * 1000:.1f} ms ({max(stalls) * 1000:.1f} ms)"),
            ("disk_full_soon warnings", f"{len(report.diagnoses):,}"),
        ]
    )  # fmt: skip
    emit(table, result, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
