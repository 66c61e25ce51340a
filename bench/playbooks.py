"""Benchmark: drwatch's own time in a recovery playbook, per step, without the cloud's waits.

    ./dev bench playbooks --runs 50 --backend fake,moto --out r.json

DESIGN.md's target: drwatch's own time in a playbook (excluding waits on the cloud) is
under 1 s per step. Each scenario runs a real playbook many times through the real runner,
built by `build_runner` from `config/drwatch.example.toml` (the daemon's wiring), with its
real SQLite journal (WAL, `synchronous=FULL`) in a temporary directory on disk, and
structlog writing JSON at level info to a file, as a daemon logs.

The world behind the runner, fresh for every run:

  fake   `FakeProvider` seeded like the tests (`drwatch.act.testing.seed_world`)
  moto   the real `AwsProvider` against `moto_server` (its own process), reset and seeded
         with the sandbox topology's us-east-1 half before every run

Both with the tests' `SimulatedHosts` as the fleet view and the agents, except that a
host a run launches shows down for its first `--boot-polls` fleet refreshes (default 30),
so the waits for it really poll. The provider, the fleet view, the agents and the
runner's clock are wrapped in a proxy that times every awaited call: that is "waiting on
the cloud". A nested call (the fleet view asking the provider) counts once. Own time =
wall - waits. The runner's clock reads real time; its `sleep` (the poll interval of every
wait, 1 s by default) returns after one yield to the loop and is counted as a wait.
Process CPU time (`time.process_time`, all threads) is recorded too, with and without the
CPU spent inside the timed calls (botocore's work for the AWS adapter, or the doubles).

A step runs from the runner's `step_intent` journal write to the next step's (the last
one to `finish_run`): its journal writes, fsyncs, thread hops and progress reads are in.
The run's start (`start_run`, first reads) and end (`finish_run`) are in the per-run figure.

Not a test: nothing here asserts. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from bench.common import emit, machine
from drwatch import logs
from drwatch.act.base import AgentActions, Clock, FleetView
from drwatch.act.journal import Journal
from drwatch.act.runner import Runner
from drwatch.act.testing import SimulatedHosts, seed_world
from drwatch.act.wiring import build_runner, group_infos
from drwatch.cluster.sqlite_store import SqliteJournalStore
from drwatch.config import Config, ProviderConfig, load
from drwatch.model.fleet import Instance
from drwatch.model.observation import TargetHealth
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress
from drwatch.model.snapshot import HealthKey
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import Provider, VolumeInfo
from drwatch.providers.fake import FakeProvider
from drwatch.sandbox.cloud import Moto, MotoProcess, seed
from drwatch.sandbox.topology import Topology, default_topology

T = TypeVar("T")
REGION = "us-east-1"
CONFIG = Path(__file__).resolve().parent.parent / "config" / "drwatch.example.toml"
WRITES = (
    "start_run",
    "take_over",
    "finish_run",
    "step_intent",
    "step_end",
    "effect_intent",
    "effect_done",
)
READS = ("run", "recent", "unfinished", "steps", "effect", "has_effects")
WAIT_KINDS = ("provider", "fleet", "agent", "poll")


# -- timing the world's calls -----------------------------------------------------------------


@dataclass
class _Frame:
    inner: float = 0.0  # seconds of timed calls made inside this one
    inner_cpu: float = 0.0  # and their CPU seconds


_FRAME: ContextVar[_Frame | None] = ContextVar("bench_playbooks_frame", default=None)


class Waits:
    """Seconds inside awaited calls on the world, by kind. A call made inside another
    timed call counts under its own kind, and once in `total`. `cpu` is this process's
    CPU time inside them (the AWS adapter's botocore work, or the in-memory doubles)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.cpu = 0.0
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    async def timed(self, kind: str, call: Awaitable[T]) -> T:
        parent = _FRAME.get()
        frame = _Frame()
        token = _FRAME.set(frame)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return await call
        finally:
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            _FRAME.reset(token)
            self.seconds[kind] += dt - frame.inner
            self.calls[kind] += 1
            if parent is None:
                self.total += dt
                self.cpu += dc
            else:
                parent.inner += dt
                parent.inner_cpu += dc


class Timed:
    """Stands in for `target`; its coroutine methods are timed as waits of `kind`. The
    target can be swapped between runs (a fresh world behind the same runner)."""

    def __init__(self, target: object, kind: str, waits: Waits) -> None:
        self.target = target
        self._kind = kind
        self._waits = waits

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        waits, kind = self._waits, self._kind

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await waits.timed(kind, attr(*args, **kwargs))

        return call


class GcTime:
    """Seconds spent in the garbage collector (any generation), from `gc.callbacks`."""

    def __init__(self) -> None:
        self.total = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._on)

    def _on(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._t0


GC = GcTime()


class PollClock:
    """Real time for journal stamps; a poll's sleep yields once and is counted."""

    def __init__(self) -> None:
        self.polls = 0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.polls += 1
        await asyncio.sleep(0)


# -- step boundaries from the journal -----------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    at: float
    waits: float
    by_kind: dict[str, float]
    calls: dict[str, int]
    cpu: float
    waits_cpu: float
    writes: int
    journal_s: float
    polls: int
    gc_s: float


@dataclass
class StepSample:
    name: str
    wall: float
    waits: float
    by_kind: dict[str, float]
    calls: dict[str, int]
    cpu: float
    waits_cpu: float
    writes: int
    journal_s: float
    polls: int
    gc_s: float
    status: str = ""

    @property
    def own(self) -> float:
        return self.wall - self.waits

    @property
    def own_cpu(self) -> float:
        return self.cpu - self.waits_cpu


@dataclass
class Meter:
    """Wraps the runner's journal: counts writes, times every journal call (in its worker
    thread), and cuts the run into steps at each `step_intent` and at `finish_run`."""

    waits: Waits
    clock: PollClock
    writes: int = 0
    journal_s: float = 0.0
    steps: list[StepSample] = field(default_factory=list)
    _open: tuple[str, Mark] | None = None

    def install(self, journal: Journal) -> None:
        for name in (*WRITES, *READS):
            setattr(journal, name, self._wrap(name, getattr(journal, name)))

    def mark(self) -> Mark:
        w = self.waits
        return Mark(
            time.perf_counter(),
            w.total,
            dict(w.seconds),
            dict(w.calls),
            time.process_time(),
            w.cpu,
            self.writes,
            self.journal_s,
            self.clock.polls,
            GC.total,
        )

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        write = name in WRITES

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if name == "step_intent":
                self._cut(args[1])
            elif name == "finish_run":
                self._cut(None)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.journal_s += time.perf_counter() - t0
                self.writes += write

        return wrapped

    def _cut(self, next_step: str | None) -> None:
        now = self.mark()
        if self._open is not None:
            name, start = self._open
            self.steps.append(_between(name, start, now))
        self._open = (next_step, now) if next_step is not None else None


def _between(name: str, a: Mark, b: Mark) -> StepSample:
    kinds = set(a.by_kind) | set(b.by_kind)
    return StepSample(
        name=name,
        wall=b.at - a.at,
        waits=b.waits - a.waits,
        by_kind={k: b.by_kind.get(k, 0.0) - a.by_kind.get(k, 0.0) for k in kinds},
        calls={k: b.calls.get(k, 0) - a.calls.get(k, 0) for k in kinds},
        cpu=b.cpu - a.cpu,
        waits_cpu=b.waits_cpu - a.waits_cpu,
        writes=b.writes - a.writes,
        journal_s=b.journal_s - a.journal_s,
        polls=b.polls - a.polls,
        gc_s=b.gc_s - a.gc_s,
    )


# -- worlds and scenarios ------------------------------------------------------------------------


@dataclass
class BootingHosts(SimulatedHosts):
    """The tests' simulated hosts, except that a host the run launched shows its agent and
    app down for its first `boot_polls` fleet refreshes: the playbook's waits poll."""

    boot_polls: int = 0
    seeded: frozenset[str] = frozenset()
    refreshes: dict[str, int] = field(default_factory=dict)

    def _host_health(
        self, inst: Instance, volumes: list[VolumeInfo], out: dict[HealthKey, TargetHealth]
    ) -> None:
        seen = self.refreshes.get(inst.id, 0)
        booting = inst.id not in self.seeded and seen < self.boot_polls
        if booting:
            self.refreshes[inst.id] = seen + 1
            self.down.add(inst.id)
        try:
            super()._host_health(inst, volumes, out)
        finally:
            if booting:
                self.down.discard(inst.id)


def simulated_hosts(
    provider_proxy: Timed, cfg: Config, ids: Mapping[str, str], boot_polls: int
) -> BootingHosts:
    """Agents as seeded: db-2 a replica, both LBs serving the six app servers by name."""
    hosts = BootingHosts(
        cast(Provider, provider_proxy),
        regions=(REGION,),
        groups=group_infos(cfg.groups),
        boot_polls=boot_polls,
        seeded=frozenset(ids.values()),
    )
    hosts.roles[ids["db-2"]] = "replica"
    apps = {f"app-{k}" for k in range(1, 7)}
    for lb in ("lb-1", "lb-2"):
        hosts.backends[ids[lb]] = set(apps)
    return hosts


@dataclass
class Stage:
    """One fresh world for one run: the raw provider, the simulated hosts, names -> ids."""

    provider: Provider
    hosts: BootingHosts
    ids: Mapping[str, str]
    data_volume: str

    def id(self, name: str) -> str:
        return self.ids[name]


@dataclass(frozen=True)
class Scenario:
    """A fault, the plan drwatch would make for it, and what the run does."""

    name: str
    playbook: PlaybookName
    zone: str
    group: str
    target: str
    what: str
    down: tuple[str, ...] = ()  # running, but agent and app silent
    stopped: tuple[str, ...] = ()  # stopped at the provider before the run
    corrupt_volume: bool = False  # the data volume reports corrupt data


_LB, _APP, _DB = PlaybookName.LB_FAILOVER_EIP, PlaybookName.APP_REPLACE, PlaybookName.DB_RECOVER
SCENARIOS = (
    Scenario(
        "lb_failover_eip", _LB, "us-east-1a", "web-lb", "lb-1",
        "lb-1 silent: EIP to lb-2, new standby, lb-1 stopped",
        down=("lb-1",),
    ),
    Scenario(
        "lb_replace", PlaybookName.LB_REPLACE, "us-east-1a", "web-lb", "lb-1",
        "both LBs silent: new LB, EIP moved to it, lb-1 stopped",
        down=("lb-1", "lb-2"),
    ),
    Scenario(
        "app_replace", _APP, "us-east-1b", "app", "app-3",
        "app-3 silent: new app server, registered on 2 LBs, app-3 deregistered and stopped",
        down=("app-3",),
    ),
    Scenario(
        "db_recover_relaunch", _DB, "us-east-1a", "db", "db-1",
        "db-1 stopped: a new host in its zone mounts its volume, apps repointed",
        stopped=("db-1",),
    ),
    Scenario(
        "db_recover_promote", _DB, "us-east-1a", "db", "db-1",
        "db-1 silent, volume corrupt: fenced, relaunched host discarded, replica promoted",
        down=("db-1",),
        corrupt_volume=True,
    ),
)  # fmt: skip


async def prepare(stage: Stage, sc: Scenario) -> None:
    for name in sc.stopped:
        await stage.provider.stop_instance(REGION, stage.id(name))
    stage.hosts.down |= {stage.id(n) for n in sc.down}
    if sc.corrupt_volume:
        stage.hosts.corrupt.add(stage.data_volume)
    # The daemon's fleet view is current when a plan arrives.
    await stage.hosts.refresh()


def fake_stage(provider_proxy: Timed, cfg: Config, boot_polls: int) -> Stage:
    world = seed_world(FakeProvider([REGION]))
    provider_proxy.target = world.provider
    hosts = simulated_hosts(provider_proxy, cfg, world.ids, boot_polls)
    return Stage(world.provider, hosts, world.ids, world.data_volume)


class MotoWorld:
    """moto_server in its own process; reset and seeded (us-east-1 only) before each run."""

    def __init__(self, workdir: Path) -> None:
        self.proc = MotoProcess(_free_port(), workdir / "moto.log")
        self.boto = Moto(self.proc.url)

    async def stage(
        self, provider: Provider, provider_proxy: Timed, cfg: Config, boot_polls: int
    ) -> Stage:
        await asyncio.to_thread(self._reset)
        seeded = await asyncio.to_thread(seed, self.boto, bench_topology())
        provider_proxy.target = provider
        hosts = simulated_hosts(provider_proxy, cfg, seeded.instances, boot_polls)
        return Stage(provider, hosts, seeded.instances, seeded.volumes["db-1-data"])

    def _reset(self) -> None:
        req = urllib.request.Request(f"{self.proc.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def bench_topology() -> Topology:
    """The sandbox topology's us-east-1 half; one snapshot per volume (seeding sleeps 1 s
    between snapshots so that their start times differ)."""
    topo = default_topology()
    instances = [
        i.model_copy(update={"snapshots": min(i.snapshots, 1)})
        for i in topo.instance
        if i.region == REGION
    ]
    regions = [r for r in topo.region if r.name == REGION]
    return topo.model_copy(update={"instance": instances, "region": regions, "dns": None})


# -- running ------------------------------------------------------------------------------------


@dataclass
class RunSample:
    scenario: str
    backend: str
    outcome: str
    detail: str
    wall: float
    waits: float
    cpu: float
    waits_cpu: float
    writes: int
    polls: int
    steps: list[StepSample]

    @property
    def own(self) -> float:
        return self.wall - self.waits


@dataclass
class Rig:
    runner: Runner
    meter: Meter
    waits: Waits
    clock: PollClock
    provider: Timed
    fleet: Timed
    agent: Timed


def make_rig(cfg: Config) -> Rig:
    waits = Waits()
    clock = PollClock()
    provider = Timed(None, "provider", waits)
    fleet = Timed(None, "fleet", waits)
    agent = Timed(None, "agent", waits)
    runner = build_runner(
        cfg,
        cast(Provider, provider),
        cast(FleetView, fleet),
        cast(AgentActions, agent),
        kill_switch=lambda: False,
        clock=cast(Clock, Timed(clock, "poll", waits)),
    )
    meter = Meter(waits, clock)
    store = runner.journal
    assert isinstance(store, SqliteJournalStore)  # one watcher: the SQLite journal, wrapped
    meter.install(store.journal)
    return Rig(runner, meter, waits, clock, provider, fleet, agent)


async def run_once(rig: Rig, stage: Stage, sc: Scenario, backend: str, n: int) -> RunSample:
    await prepare(stage, sc)
    rig.fleet.target = rig.agent.target = stage.hosts
    plan = Plan(
        f"{backend}-{sc.name}-{n}", sc.playbook, REGION, sc.zone, sc.group, (stage.id(sc.target),)
    )
    rig.meter.steps = []
    start = rig.meter.mark()
    rig.runner.submit(plan)
    progress = await rig.runner.wait(plan.incident_id, 300.0)
    end = rig.meter.mark()
    steps = rig.meter.steps
    _statuses(steps, progress)
    return RunSample(
        sc.name,
        backend,
        progress.outcome.value if progress else "none",
        progress.detail if progress else "",
        end.at - start.at,
        end.waits - start.waits,
        end.cpu - start.cpu,
        end.waits_cpu - start.waits_cpu,
        end.writes - start.writes,
        end.polls - start.polls,
        steps,
    )


def _statuses(steps: list[StepSample], progress: RunProgress | None) -> None:
    status = {s.name: s.status.value for s in progress.steps} if progress else {}
    for s in steps:
        s.status = status.get(s.name, "?")


async def bench_backend(
    backend: str, cfg: Config, workdir: Path, args: argparse.Namespace
) -> list[RunSample]:
    """Every chosen scenario on one backend, through one runner and one journal."""
    rig = make_rig(cfg)
    try:
        if backend == "moto":
            return await _on_moto(rig, cfg, workdir, args)

        async def fake() -> Stage:
            return fake_stage(rig.provider, cfg, args.boot_polls)

        return await _all_series(rig, backend, args, fake)
    finally:
        await rig.runner.aclose()
        rig.runner.journal.close()


async def _on_moto(
    rig: Rig, cfg: Config, workdir: Path, args: argparse.Namespace
) -> list[RunSample]:
    moto = MotoWorld(workdir)
    # Dummy credentials, as the tests use: a stray call can never reach an account.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    pcfg = ProviderConfig(regions=[REGION], endpoints={REGION: moto.proc.url})
    try:
        await moto.proc.start()
        async with AwsProvider(pcfg, connect_timeout=2.0, read_timeout=10.0) as aws:

            async def stage() -> Stage:
                return await moto.stage(aws, rig.provider, cfg, args.boot_polls)

            return await _all_series(rig, "moto", args, stage)
    finally:
        await moto.proc.stop()


async def _all_series(
    rig: Rig, backend: str, args: argparse.Namespace, stage: Callable[[], Awaitable[Stage]]
) -> list[RunSample]:
    out: list[RunSample] = []
    for sc in chosen(args):
        out += await series(rig, sc, backend, args, stage)
    return out


async def series(
    rig: Rig,
    sc: Scenario,
    backend: str,
    args: argparse.Namespace,
    stage: Callable[[], Awaitable[Stage]],
) -> list[RunSample]:
    out = []
    for n in range(args.warmup + args.runs):
        sample = await run_once(rig, await stage(), sc, backend, n)
        if sample.outcome != RunOutcome.SUCCEEDED.value:
            print(f"# {backend} {sc.name} run {n}: {sample.outcome}: {sample.detail}")
        if n >= args.warmup:
            out.append(sample)
    print(f"# {backend} {sc.name}: {len(out)} runs done", file=sys.stderr)
    return out


def chosen(args: argparse.Namespace) -> list[Scenario]:
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    return [s for s in SCENARIOS if wanted is None or s.name in wanted]


# -- summaries ----------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def ms(x: float) -> float:
    return round(x * 1000, 3)


def summarize(samples: list[RunSample]) -> dict[str, Any]:
    ok = [r for r in samples if r.outcome == RunOutcome.SUCCEEDED.value]
    outcomes = sorted({f"{r.outcome}: {r.detail}" for r in samples})
    if not ok:
        return {"runs": len(samples), "succeeded": 0, "outcomes": outcomes}
    steps = [s for r in ok for s in r.steps]
    per_run = [r.own / len(r.steps) for r in ok if r.steps]
    return {
        "runs": len(samples),
        "succeeded": len(ok),
        "steps_per_run": round(len(steps) / len(ok), 2) if ok else 0,
        "step_own_ms": _dist([s.own for s in steps]),
        "step_wall_ms": _dist([s.wall for s in steps]),
        "step_cpu_ms": _dist([s.cpu for s in steps]),
        "step_own_cpu_ms": _dist([s.own_cpu for s in steps]),
        "step_waits_ms": _dist([s.waits for s in steps]),
        "step_journal_ms": _dist([s.journal_s for s in steps]),
        "step_gc_ms": _dist([s.gc_s for s in steps]),
        "journal_writes_per_step": _mean([s.writes for s in steps]),
        "run_own_per_step_ms": _dist(per_run),
        "run_wall_ms": _dist([r.wall for r in ok]),
        "run_own_ms": _dist([r.own for r in ok]),
        "run_own_cpu_ms": _dist([r.cpu - r.waits_cpu for r in ok]),
        "journal_writes_per_run": _mean([r.writes for r in ok]),
        "polls_per_run": _mean([r.polls for r in ok]),
        "outcomes": outcomes,
        "by_step": _by_step(steps),
    }


def _dist(xs: list[float]) -> dict[str, float]:
    return {
        "p50": ms(pct(xs, 0.5)),
        "p99": ms(pct(xs, 0.99)),
        "max": ms(max(xs)),
        "mean": ms(sum(xs) / len(xs)),
    }


def _mean(xs: list[int] | list[float]) -> float:
    return round(sum(xs) / len(xs), 2)


def _by_step(steps: list[StepSample]) -> dict[str, Any]:
    groups: dict[str, list[StepSample]] = defaultdict(list)
    for s in steps:
        groups[s.name].append(s)
    return {
        name: {
            "status": sorted({s.status for s in ss}),
            "own_ms": _dist([s.own for s in ss]),
            "wall_ms": _dist([s.wall for s in ss]),
            "cpu_ms": _dist([s.cpu for s in ss]),
            "own_cpu_ms": _dist([s.own_cpu for s in ss]),
            "waits_cpu_ms": _dist([s.waits_cpu for s in ss]),
            "journal_ms": _dist([s.journal_s for s in ss]),
            "journal_writes": _mean([s.writes for s in ss]),
            "gc_ms": _dist([s.gc_s for s in ss]),
            "waits_ms_mean": {
                k: ms(sum(s.by_kind.get(k, 0.0) for s in ss) / len(ss)) for k in WAIT_KINDS
            },
            "calls_mean": {k: _mean([s.calls.get(k, 0) for s in ss]) for k in WAIT_KINDS},
        }
        for name, ss in groups.items()
    }


def table(res: dict[str, Any]) -> str:
    lines = [
        "| playbook (scenario) | backend | runs ok | steps/run | own/step p50 / p99 / max ms"
        " | own CPU/step p50 / p99 ms | wall/step p50 / p99 ms | journal writes/step"
        " | journal ms/step p50 | per run: own / steps, max ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc, backend, s in _rows(res):
        lines.append(_summary_row(sc, backend, s))
    for sc in SCENARIOS:
        rows = [(b, s) for c, b, s in _rows(res) if c is sc and s["succeeded"]]
        if rows:
            lines += [
                f"\n### {sc.playbook.value} ({sc.name}): {sc.what}\n",
                *_step_rows(rows),
            ]
    return "\n".join(lines)


def _rows(res: dict[str, Any]) -> list[tuple[Scenario, str, dict[str, Any]]]:
    return [
        (sc, backend, by_sc[sc.name])
        for sc in SCENARIOS
        for backend, by_sc in res["results"].items()
        if sc.name in by_sc
    ]


def _summary_row(sc: Scenario, backend: str, s: dict[str, Any]) -> str:
    if not s["succeeded"]:
        return f"| {sc.playbook.value} ({sc.name}) | {backend} | 0/{s['runs']} | no run succeeded |"
    o, c, w = s["step_own_ms"], s["step_own_cpu_ms"], s["step_wall_ms"]
    return (
        f"| {sc.playbook.value} ({sc.name}) | {backend} | {s['succeeded']}/{s['runs']}"
        f" | {s['steps_per_run']} | {o['p50']:.1f} / {o['p99']:.1f} / **{o['max']:.1f}**"
        f" | {c['p50']:.1f} / {c['p99']:.1f} | {w['p50']:.1f} / {w['p99']:.1f}"
        f" | {s['journal_writes_per_step']} | {s['step_journal_ms']['p50']:.1f}"
        f" | {s['run_own_per_step_ms']['max']:.1f} |"
    )


def _step_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = [
        "| backend | step | status | own p50 / p99 ms | own CPU p50 ms | wall p50 ms"
        " | journal writes | journal ms p50 | GC ms p50 / max"
        " | waits mean ms: provider / fleet / agent / poll | CPU inside waits p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, s in rows:
        for name, st in s["by_step"].items():
            wm = st["waits_ms_mean"]
            out.append(
                f"| {backend} | {name} | {','.join(st['status'])}"
                f" | {st['own_ms']['p50']:.1f} / {st['own_ms']['p99']:.1f}"
                f" | {st['own_cpu_ms']['p50']:.1f} | {st['wall_ms']['p50']:.1f}"
                f" | {st['journal_writes']} | {st['journal_ms']['p50']:.1f}"
                f" | {st['gc_ms']['p50']:.1f} / {st['gc_ms']['max']:.1f}"
                f" | {wm['provider']:.1f} / {wm['fleet']:.1f} / {wm['agent']:.1f}"
                f" / {wm['poll']:.2f}"
                f" | {st['waits_cpu_ms']['p50']:.1f} |"
            )
    return out


# -- main ---------------------------------------------------------------------------------------


def _fs_type(path: Path) -> str:
    """The file system the journal's fsyncs hit (tmpfs would make them free)."""
    best, fs = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    except OSError:
        pass
    return fs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=50, help="measured runs per scenario and backend")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured runs first")
    p.add_argument("--backend", default="fake,moto", help="fake, moto, or both")
    p.add_argument(
        "--boot-polls",
        type=int,
        default=30,
        help="fleet refreshes a launched host shows down before it is up (its waits poll)",
    )
    p.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    p.add_argument("--dir", type=Path, default=None, help="where the journal goes (on disk)")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    base = load(CONFIG)
    results: dict[str, Any] = {}
    for backend in args.backend.split(","):
        state = workdir / backend
        cfg = base.model_copy(
            update={"watcher": base.watcher.model_copy(update={"state_dir": state})}
        )
        samples = await bench_backend(backend, cfg, workdir, args)
        results[backend] = {sc.name: summarize([r for r in samples if r.scenario == sc.name])
                            for sc in chosen(args)}  # fmt: skip
    return {"results": results}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="drwatch-bench-playbooks-", dir=args.dir))
    log_file = (workdir / "drwatch.log").open("w")
    # What a daemon does: JSON lines at info. Their cost is drwatch's own time.
    logs.configure("json", "info", stream=log_file)
    try:
        res = asyncio.run(bench(args, workdir))
        res.update(
            runs=args.runs,
            warmup=args.warmup,
            settings={
                "config": "config/drwatch.example.toml (state_dir: a temp dir)",
                "journal": "SQLite WAL, synchronous=FULL, one file per backend",
                "logging": "structlog JSON at info, to a file",
                "poll_sleep": "skipped: yields once, counted as a wait",
                "boot_polls": args.boot_polls,
                "moto_seed": "sandbox topology, us-east-1 only, 1 snapshot per volume",
            },
            machine=machine(platform=platform.platform(), journal_dir_fs=_fs_type(workdir)),
            command="python -m bench.playbooks " + " ".join(argv),
        )
    finally:
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
    emit(table(res), res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
