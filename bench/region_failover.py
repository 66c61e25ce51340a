"""Benchmark: region failover in the sandbox, approval -> the service answering through its
public name from the standby region, with the time of each step.

    ./dev bench region_failover --runs 3 --out bench/results/region-failover.json

DESIGN.md's target: under 60 s.

Each run is the shipped drill `config/drills/region-failover-pg.toml` (real PostgreSQL:
us-east-1 lost, an `approve` event, region.failover): a fresh sandbox, the drill runner,
its report. From the report: the approval is the `approve` event's time (the drill
records it when the API call is made); the end is the end of the `verify_service` step,
which waits for the daemon's service check through the public name to answer after the
DNS switch, and the report's `service` block says which region answered at the end.
Per step: its start and end from the run's journal, as the incident shows them. The
approval-to-run-start gap is the tick that picks the approval up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import emit, machine, measure_table
from drwatch.sandbox.drill import run_drill
from drwatch.sandbox.scenario import load_scenario
from drwatch.sandbox.topology import default_topology

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "config/drills/region-failover-pg.toml"


def measure(report: dict[str, Any]) -> dict[str, Any]:
    """Approval -> service, and each step's duration, from one drill report."""
    approve = next(e for e in report["events"] if e["do"] == "approve" and not e["error"])
    inc = next(i for i in report["incidents"] if i["playbook"] == "region.failover")
    steps = {s["name"]: s for s in inc["steps"]}
    end = steps["verify_service"]["ended_at_s"]
    first = min(s["started_at_s"] for s in inc["steps"])
    return {
        "passed": report["passed"],
        "approval_to_service_s": round(end - approve["at_s"], 2),
        "approval_to_run_s": round(first - approve["at_s"], 2),
        "steps_s": {n: round(s["ended_at_s"] - s["started_at_s"], 2) for n, s in steps.items()},
        "service": report.get("service"),
        "data": report.get("data"),
    }


async def one_run(n: int) -> dict[str, Any]:
    topo = default_topology()
    sc = load_scenario(SCENARIO, topo)
    with tempfile.TemporaryDirectory(prefix=f"drwatch-bench-rf{n}-") as tmp:
        report = await run_drill(sc, topo, Path(tmp))
    return measure(report)


def table(runs: list[dict[str, Any]]) -> str:
    totals = [r["approval_to_service_s"] for r in runs]
    rows = [
        ("runs (passed)", f"{len(runs)} ({sum(r['passed'] for r in runs)})"),
        ("approval -> service answers, median", f"{statistics.median(totals):.1f} s"),
        ("approval -> service answers, max", f"{max(totals):.1f} s"),
        (
            "approval -> run starts, median",
            f"{statistics.median(r['approval_to_run_s'] for r in runs):.1f} s",
        ),
    ]
    for name in runs[0]["steps_s"]:
        values = [r["steps_s"].get(name, 0.0) for r in runs]
        rows.append(
            (f"  {name}, median (max)", f"{statistics.median(values):.1f} s ({max(values):.1f})")
        )
    return measure_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [asyncio.run(one_run(n)) for n in range(args.runs)]
    emit(table(runs), {"machine": machine(), "scenario": SCENARIO.name, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
