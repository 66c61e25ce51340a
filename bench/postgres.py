"""The agent on real PostgreSQL 15: the freeze window under a steady write load, and
what one `postgres` check costs.

    ./dev bench postgres --snapshots 40 --out bench/results/postgres.json

Freeze: a primary (fsync on) takes a steady write load (writers inserting a row every
`--interval` each, paced, each commit timed). Each snapshot is the agent's real
`freeze` action, a `--hold` standing in for the provider's CreateSnapshot call, then
`thaw`; a pause lets the load settle before the next. Per snapshot, "writes blocked"
is the longest any insert in flight during the freeze window waited for its commit.
Two modes: the backup mode alone (pg_backup_start/stop), and with a real `fsfreeze` of
the filesystem holding the data directory (an ext4 image on a loop device made for the
run, so nothing else on the machine is frozen; needs root, skipped otherwise).

Check: the `postgres` check run back to back on a primary with one streaming replica,
and on the replica: wall time per call, the agent's CPU per call, and the CPU the
server's backend spent on it (from /proc/PID/stat of the check's session).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import emit, machine, measure_table
from drwatch.agent import config as agent_config
from drwatch.agent.pgactions import Freezer
from drwatch.agent.postgres import Postgres, PostgresCheck
from tests.support.postgres import Clusters, Server, clusters, loop_filesystem, pg_binary, run

BENCH_OPTIONS = {"fsync": "on", "synchronous_commit": "on", "shared_buffers": "64MB"}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


# --- the write load --------------------------------------------------------------------------


@dataclass
class Load:
    """Paced writers: each inserts a row every `interval` (later when a commit is slow)."""

    writes: list[tuple[float, float]] = field(default_factory=list)  # (start, end) monotonic
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def writer(self, server: Server, interval: float) -> None:
        conn = await asyncpg.connect(**server.dsn_socket)
        try:
            while not self.stop.is_set():
                start = time.monotonic()
                await conn.execute("INSERT INTO load (at, pad) VALUES (now(), repeat('x', 200))")
                end = time.monotonic()
                self.writes.append((start, end))
                await asyncio.sleep(max(0.0, interval - (end - start)))
        finally:
            await conn.close()

    def blocked(self, t0: float, t1: float) -> float:
        """The longest wait of an insert in flight during [t0, t1]."""
        waits = [end - max(start, t0) for start, end in self.writes if start < t1 and end > t0]
        return max(waits, default=0.0)

    def latencies_outside(self, windows: list[tuple[float, float]]) -> list[float]:
        return [
            end - start
            for start, end in self.writes
            if not any(start < t1 and end > t0 for t0, t1 in windows)
        ]


@contextlib.asynccontextmanager
async def running_load(server: Server, writers: int, interval: float) -> AsyncIterator[Load]:
    server.sql(
        "CREATE TABLE IF NOT EXISTS load (id bigserial PRIMARY KEY, at timestamptz, pad text)"
    )
    load = Load()
    async with asyncio.TaskGroup() as tg:
        for _ in range(writers):
            tg.create_task(load.writer(server, interval))
        try:
            await asyncio.sleep(2.0)  # warm up
            yield load
        finally:
            load.stop.set()


# --- freeze ----------------------------------------------------------------------------------


async def snapshots(
    server: Server, args: argparse.Namespace, fs_mount: Path | None
) -> dict[str, Any]:
    cfg = agent_config.PostgresConfig.model_validate(
        {
            "host": str(server.sockdir),
            "port": server.port,
            "connect_timeout": "5s",
            "actions": ["freeze", "thaw"],
            "max_freeze": "10s",
            **({"fsfreeze_mount": str(fs_mount)} if fs_mount else {}),
        }
    )
    windows: list[tuple[float, float]] = []
    blocked, freeze_call, frozen_s, fs_blocked = [], [], [], []
    async with Postgres(cfg) as pg, running_load(server, args.writers, args.interval) as load:
        freezer = Freezer(pg)
        for n in range(args.snapshots):
            t0 = time.monotonic()
            await freezer.freeze({"label": f"bench-{n}"})
            freeze_call.append(time.monotonic() - t0)
            await asyncio.sleep(args.hold)
            result = await freezer.thaw({})
            t1 = time.monotonic()
            windows.append((t0, t1))
            frozen_s.append(float(str(result["frozen_s"])))
            fs_blocked.append(float(str(result["writes_blocked_s"])))
            await asyncio.sleep(args.pause)
            blocked.append(load.blocked(t0, t1))
        outside = load.latencies_outside(windows)
        total = len(load.writes)
    return {
        "snapshots": len(blocked),
        "writes": total,
        "writes_blocked_s": summary(blocked),
        "freeze_call_s": summary(freeze_call),
        "frozen_s": summary(frozen_s),
        "fs_frozen_s": summary(fs_blocked),
        "insert_latency_outside_s": summary(outside),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# --- check cost ------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


async def check_cost(server: Server, calls: int) -> dict[str, Any]:
    cfg = agent_config.PostgresConfig.model_validate(
        {"host": str(server.sockdir), "port": server.port, "connect_timeout": "5s"}
    )
    check_cfg = agent_config.PostgresCheckConfig.model_validate(
        {"kind": "postgres", "name": "database", "amcheck_interval": "0s"}
    )
    async with Postgres(cfg) as pg:
        check = PostgresCheck(check_cfg, pg, timeout=5.0)
        first = await check.run()
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = 'drwatch-agent'"
        backend = int(server.sql(query).split()[0])
        walls: list[float] = []
        cpu0, ticks0 = time.process_time(), cpu_ticks(backend)
        for _ in range(calls):
            t = time.monotonic()
            result = await check.run()
            walls.append(time.monotonic() - t)
        agent_cpu = time.process_time() - cpu0
        server_cpu = (cpu_ticks(backend) - ticks0) / os.sysconf("SC_CLK_TCK")
    return {
        "role": first.data.get("role"),
        "status": result.status.value,
        "calls": calls,
        "wall_s": summary(walls),
        "agent_cpu_per_call_s": agent_cpu / calls,
        "server_cpu_per_call_s": server_cpu / calls,
    }


# --- the run ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"machine": machine(asyncpg=asyncpg.__version__), "args": vars(args)}
    result["machine"]["postgres"] = run([pg_binary("postgres"), "--version"]).strip()
    with clusters() as made:
        result["freeze"] = await _freeze_modes(made, args)
        made.stop_all()
        primary = made.primary()
        replica = made.replica(primary, name="replica")
        result["check_primary"] = await check_cost(primary, args.calls)
        result["check_replica"] = await check_cost(replica, args.calls)
    result["args"] = {k: v for k, v in vars(args).items() if k != "out"}
    emit(table(result), result, args.out)


async def _freeze_modes(made: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    primary = made.primary(options=BENCH_OPTIONS)
    out["backup_mode"] = await snapshots(primary, args, None)
    made.stop_all()
    with loop_filesystem() as mount:
        if mount is None:
            out["fsfreeze"] = {"skipped": "cannot mount a loop filesystem here (root needed)"}
            return out
        server = made.primary(data=mount / "data", options=BENCH_OPTIONS)
        try:
            out["fsfreeze"] = await snapshots(server, args, mount)
        finally:
            made.stop_all()
    return out


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for mode, label in (("backup_mode", "backup mode only"), ("fsfreeze", "with fsfreeze")):
        f = r["freeze"][mode]
        if "skipped" in f:
            rows.append((f"freeze, {label}", f["skipped"]))
            continue
        b = f["writes_blocked_s"]
        rows += [
            (
                f"freeze, {label}: writes blocked p50 / p99 / max ({f['snapshots']} snapshots)",
                f"{ms(b['p50'])} / **{ms(b['p99'])}** / {ms(b['max'])}",
            ),
            (
                f"freeze, {label}: freeze action p50 / p99",
                f"{ms(f['freeze_call_s']['p50'])} / {ms(f['freeze_call_s']['p99'])}",
            ),
            (
                f"freeze, {label}: fs frozen (thaw's writes_blocked_s) p50 / max",
                f"{ms(f['fs_frozen_s']['p50'])} / {ms(f['fs_frozen_s']['max'])}",
            ),
            (
                f"freeze, {label}: insert latency outside freezes p50 / p99",
                f"{ms(f['insert_latency_outside_s']['p50'])} / "
                f"{ms(f['insert_latency_outside_s']['p99'])}",
            ),
        ]
    for key in ("check_primary", "check_replica"):
        c = r[key]
        rows.append(
            (
                f"postgres check on the {c['role']}: wall p50 / p99 ({c['calls']} calls)",
                f"{us(c['wall_s']['p50'])} / {us(c['wall_s']['p99'])}",
            )
        )
        rows.append(
            (
                f"postgres check on the {c['role']}: CPU per call, agent / server backend",
                f"{us(c['agent_cpu_per_call_s'])} / {us(c['server_cpu_per_call_s'])}",
            )
        )
    return measure_table(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshots", type=int, default=40)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument(
        "--interval", type=float, default=0.01, help="seconds between a writer's inserts"
    )
    p.add_argument("--hold", type=float, default=0.2, help="seconds between freeze and thaw")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between snapshots")
    p.add_argument("--calls", type=int, default=2000, help="postgres check calls per role")
    p.add_argument("--out", type=Path)
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
