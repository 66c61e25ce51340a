"""Benchmark: leader takeover, kill -9 of the leader -> the new leader's next journaled effect.

    ./dev bench takeover --runs 20 --ttl 10 --out bench/results/takeover-ttl10.json

DESIGN.md's target: p99 under lease TTL + 2 s.

What runs: one etcd (Debian `etcd-server`, loopback, temp data dir) and three watcher
processes (`python -m bench.takeover member ...`), each running the real `Election`
with the `[cluster]` timing for the TTL asked (TTL 10: the shipped defaults, keepalive
every 3.3 s, margin 2 s; TTL 3: keepalive 1 s, margin 0.5 s, as in the tests). A watcher
that wins journals one effect intent at once, through the fenced `EtcdJournalStore`, as
a new leader resuming an unfinished run would: `journal/effects/bench/term-<N>/first`,
whose `intent_at` is the writer's wall clock.

Each run: wait until a leader has journaled its effect and every watcher is alive for
one keepalive interval more, plus a random phase of one keepalive period (seeded); note
the wall time; `kill -9` the leader's process; poll
etcd (every 20 ms) for the next term's effect; latency = its `intent_at` minus the wall
time taken just before the kill (same machine clock, so the poll period never enters).
Then restart the killed watcher under its name. The old lease outlives the kill by
TTL minus the time since its last keepalive, so runs spread over [TTL - keepalive, TTL]
plus etcd's expiry check (every 500 ms), the watch event, the campaign and the write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, machine, measure_table
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import EtcdJournalStore
from drwatch.cluster.leader import Election
from drwatch.config import ClusterConfig

NAMESPACE = "bench"
NAMES = ("w1", "w2", "w3")


def cluster_config(endpoint: str, name: str, ttl: int) -> ClusterConfig:
    if ttl >= 10:
        return ClusterConfig(name=name, endpoints=[endpoint], namespace=NAMESPACE, lease_ttl=ttl)
    return ClusterConfig(
        name=name,
        endpoints=[endpoint],
        namespace=NAMESPACE,
        lease_ttl=ttl,
        keepalive_interval=ttl / 3,
        request_timeout=0.5,
        safety_margin=0.5,
    )


async def member(endpoint: str, name: str, ttl: int) -> None:
    """A watcher: campaign; on each win, journal one effect at once, under the fence."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    cfg = cluster_config(endpoint, name, ttl)
    etcd = Etcd(cfg.endpoints, timeout=cfg.request_timeout)
    election = Election(etcd, cfg)
    journal = EtcdJournalStore(etcd, NAMESPACE, election.fence)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(election.run())
        written = 0
        while True:
            await asyncio.sleep(0.005)
            state = election.state
            if state.acting and state.term != written:
                await journal.effect_intent(
                    "bench", f"term-{state.term}", "first", params={}, owner=name, now=time.time()
                )
                written = state.term


class Bench:
    def __init__(self, etcd_bin: str, tmp: Path, ttl: int) -> None:
        self.tmp, self.ttl = tmp, ttl
        self.etcd_bin = etcd_bin
        self.rng = random.Random(20261201)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.client_port, self.peer_port = _free_port(), _free_port()
        self.endpoint = f"127.0.0.1:{self.client_port}"

    def start_etcd(self) -> subprocess.Popen[bytes]:
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        return subprocess.Popen(
            [
                self.etcd_bin,
                "--name=bench",
                f"--data-dir={self.tmp / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=bench={peer}",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_member(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "bench.takeover", "member", self.endpoint, name, str(self.ttl)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def leader(self, etcd: Etcd, deadline: float) -> tuple[str, int]:
        """The leader's name and term, once it has journaled its effect."""
        async with asyncio.timeout(deadline):
            while True:
                kv = await _quiet_get(etcd, f"/{NAMESPACE}/leader")
                if kv is not None:
                    term = kv.create_revision
                    if await _effect_at(etcd, term) is not None:
                        return str(json.loads(kv.value)["name"]), term
                await asyncio.sleep(0.02)

    async def one_run(self, etcd: Etcd) -> dict[str, Any]:
        name, term = await self.leader(etcd, 4 * self.ttl + 30)
        # Every follower has campaigned and watches; then a random phase of the leader's
        # keepalive period, so kills land anywhere between two keepalives.
        await asyncio.sleep(self.ttl / 3 + 0.5 + self.rng.uniform(0, self.ttl / 3))
        killed_at = time.time()
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)
        async with asyncio.timeout(4 * self.ttl + 30):
            while True:
                kv = await _quiet_get(etcd, f"/{NAMESPACE}/leader")
                if kv is not None and kv.create_revision != term:
                    at = await _effect_at(etcd, kv.create_revision)
                    if at is not None:
                        new = str(json.loads(kv.value)["name"])
                        break
                await asyncio.sleep(0.02)
        self.start_member(name)
        return {"killed": name, "new_leader": new, "latency_s": round(at - killed_at, 3)}


async def _quiet_get(etcd: Etcd, key: str) -> Any:
    from drwatch.cluster.errors import EtcdUnavailableError

    try:
        return await etcd.get(key)
    except EtcdUnavailableError:
        return None


async def _effect_at(etcd: Etcd, term: int) -> float | None:
    kv = await _quiet_get(etcd, f"/{NAMESPACE}/journal/effects/bench/term-{term}/first")
    return float(json.loads(kv.value)["intent_at"]) if kv is not None else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


async def bench(etcd_bin: str, etcd_version: str, runs: int, ttl: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(etcd_bin, Path(tmp), ttl)
        etcd_proc = b.start_etcd()
        etcd = Etcd([b.endpoint], timeout=2.0)
        samples = []
        try:
            for name in NAMES:
                b.start_member(name)
            for i in range(runs):
                sample = await b.one_run(etcd)
                print(f"run {i + 1}/{runs}: {sample}", file=sys.stderr)
                samples.append(sample)
        finally:
            await etcd.close()
            for p in b.procs.values():
                p.kill()
                p.wait()
            etcd_proc.terminate()
            etcd_proc.wait(timeout=10)
    lat = [s["latency_s"] for s in samples]
    return {
        "machine": machine(etcd=etcd_version),
        "ttl_s": ttl,
        "runs": runs,
        "p50_s": nearest_rank(lat, 0.5),
        "p99_s": nearest_rank(lat, 0.99),
        "min_s": min(lat),
        "max_s": max(lat),
        "mean_s": round(statistics.fmean(lat), 3),
        "target_s": ttl + 2,
        "samples": samples,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "member":
        asyncio.run(member(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    etcd_bin = shutil.which("etcd")
    if etcd_bin is None:
        raise SystemExit("etcd is not installed (Debian etcd-server; ./dev system-deps)")
    version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True, check=False)
    r = asyncio.run(bench(etcd_bin, version.stdout.split("\n")[0], args.runs, args.ttl))
    table = measure_table(
        [
            ("lease TTL", f"{r['ttl_s']} s"),
            ("runs", str(r["runs"])),
            ("takeover p50 / p99", f"{r['p50_s']:.2f} / {r['p99_s']:.2f} s"),
            ("min / max", f"{r['min_s']:.2f} / {r['max_s']:.2f} s"),
            ("target (p99 under TTL + 2 s)", f"{r['target_s']} s"),
        ]
    )
    emit(table, r, args.out)


if __name__ == "__main__":
    main()
