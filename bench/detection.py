"""Benchmark: detection latency (fault -> incident opened) in the sandbox, with its defaults.

    ./dev bench detection --samples 20 --out bench/results/detection.json

DESIGN.md's target: p99 within 1.2x of the theoretical floor (fall x interval + timeout).

What runs: one sandbox (moto, the fault-injecting front, simulated agents and apps,
canaries) with the real daemon (`drwatch run`, its own process) watching it, started by
`drwatch.sandbox.world.Sandbox` exactly as `drwatch sandbox` and the drill runner start
it. Each sample:

  1. wait until the daemon's status says everything is healthy (the drill runner's
     `wait_healthy`) and, then, a random fraction of the deciding layer's interval, so
     faults land at every phase of the fixed-rate check schedule;
  2. apply the fault to one app server with the sandbox's fault engine (`Chaos`: the
     code behind the control API, `drwatch sandbox fault` and drill events);
  3. poll `GET /api/v1/incidents` (every 0.2 s) until the daemon has opened an incident
     naming that target, and read the daemon's status once for where the time went;
  4. heal, and wait until that incident has ended and everything is healthy again.

Kinds interleave (one of each per round, so a neighbour's load falls on all of them
alike) and targets rotate over every app server of the topology.

**The number.** latency = the incident's own `opened_at` (the daemon's clock at the tick
that opened it: epoch seconds, the same machine clock) minus the wall time just before
the fault call began. The API poll only tells us that an incident exists; its period
never enters the number. The fault call of `stop-instance` includes the stop request to
moto and one sandbox poll (`applied_s` in the JSON); the instance is stopped somewhere in
that call, so the latency overstates by at most the call, never understates.

**The floor, per kind**, from the config the sandbox renders (read back with
`drwatch.config.load`, never hard-coded). fall x interval + timeout is the worst case of
hysteresis alone: the fault lands just after a check, the next `fall` checks fail, the
last of them may take the whole timeout. What the design puts on top of it:

  fail-app       the app answers HTTP 500, the agent is fine -> `app_failed` (outage).
                 Decided by the app layer (`timing.app`). Failure "seen from here" counts
                 only after `policy.dead_grace`, measured from the health's `since` (the
                 check that turned it DOWN) - docs/failure-detection.md - so
                 floor = fall x interval + timeout + dead_grace.
  kill-agent     the agent's port closes, the app is fine -> `agent_down` (alert, no
                 playbook). Agent layer (`timing.agent`), the same grace:
                 floor = fall x interval + timeout + dead_grace.
  stop-instance  the provider says stopped -> `instance_stopped` (outage). Provider layer
                 (`timing.provider`); the provider asserts it, so it counts at once (no
                 grace): floor = fall x interval + timeout.

Not in the floor, and so measured against it: the tick (assess runs once per tick,
`drwatch.daemon.TICK_INTERVAL_S`: up to one tick passes between the evidence maturing and
the incident opening), scheduler lag, the provider loop's own poll time (it sleeps one
interval *after* each poll of every region), and the daemon's share of a busy machine.
Per sample the JSON also splits the latency at the moment the deciding evidence arrived
(from the daemon's status: the layer's `since` for app and agent, the provider's latest
`attempted_at` for stop): `observe_s` (fault -> evidence) and `decide_s` (evidence ->
opened: the dead grace plus waiting for a tick).

**Dry run.** `app_failed` and `instance_stopped` have a playbook (`app_server.replace`):
it would replace the instance every sample, then hold the cooldown. So the daemon runs
with `policy.dry_run = true`, added to the sandbox's rendered config before the daemon
starts (`Options` has no switch for it: the sandbox is started without its watcher, the
line is added under `[policy]`, the config is validated with `drwatch.config.load`, and
the sandbox's own `WatcherProcess` starts `drwatch run` on it). Dry run is read only by
the decide gates and the runner's kill switch: discovery, the observers and their
scheduler, the health store, assess and the opening of incidents are the same code with
the same timing; the incident opens, is `blocked` ("dry-run: would start ..."), and
ends `cleared` once healed. Everything else is the sandbox's default config.

Not a test: nothing here asserts. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from bench.common import emit, machine
from drwatch import __version__, logs
from drwatch.config import Config, LayerTiming, load
from drwatch.daemon import TICK_INTERVAL_S
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.daemon_api import STATUS_PATH, DaemonApi, Incident
from drwatch.sandbox.drill import HEALTHY_DEADLINE_S, wait_healthy
from drwatch.sandbox.faults import HEAL, Fault
from drwatch.sandbox.topology import Topology, default_topology
from drwatch.sandbox.world import CONFIG_FILE, Options, Sandbox

K = TypeVar("K")
POLL_S = 0.2
DAEMON_UP_DEADLINE_S = 60.0
# After healing: rise checks, a reboot after stop-instance (boot delay + rise), one tick.
CLOSE_DEADLINE_S = 90.0


@dataclass(frozen=True)
class Kind:
    """A fault verb, the timing layer that decides its finding, and the finding."""

    verb: str
    layer: str  # a field of TimingConfig
    finding: str
    grace: bool  # failure seen from here: policy.dead_grace on top of hysteresis


KINDS = {
    k.verb: k
    for k in (
        Kind("fail-app", "app", "app_failed", grace=True),
        Kind("stop-instance", "provider", "instance_stopped", grace=False),
        Kind("kill-agent", "agent", "agent_down", grace=True),
    )
}


@dataclass
class Sample:
    verb: str
    target: str
    fault_at: float
    applied_s: float
    latency_s: float | None = None  # None: no incident within the deadline
    incident: str | None = None
    finding: str | None = None
    observe_s: float | None = None  # fault -> the deciding evidence (daemon's status)
    decide_s: float | None = None  # evidence -> incident opened
    closed_after_heal_s: float | None = None


def floor_of(kind: Kind, cfg: Config) -> dict[str, float]:
    t: LayerTiming = getattr(cfg.timing, kind.layer)
    grace = cfg.policy.dead_grace if kind.grace else 0.0
    return {
        "layer_interval_s": t.interval,
        "layer_timeout_s": t.timeout,
        "layer_fall": t.fall,
        "dead_grace_s": grace,
        "floor_s": t.fall * t.interval + t.timeout + grace,
    }


def enable_dry_run(path: Path) -> Config:
    """Add `dry_run = true` to the rendered config's [policy] and validate it whole."""
    text = path.read_text(encoding="utf-8")
    if "\n[policy]\n" not in text or "dry_run" in text:
        raise SystemExit(f"bench: unexpected [policy] section in {path}")
    path.write_text(text.replace("\n[policy]\n", "\n[policy]\ndry_run = true\n", 1))
    cfg = load(path)
    if not cfg.policy.dry_run:
        raise SystemExit("bench: dry_run did not take")
    return cfg


# -- reading the daemon -------------------------------------------------------------------


async def status(sb: Sandbox) -> dict[str, Any]:
    async with sb.session().get(sb.api_url + STATUS_PATH) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def evidence_at(body: dict[str, Any], kind: Kind, target: str) -> float | None:
    """When the deciding evidence arrived, as the daemon's status tells it: the moment an
    app or agent health left `up` (its `since`); for the provider, its latest attempt
    while that is the only `stopped` answer so far (the state is read from the latest
    fresh answer, before hysteresis turns the health down)."""
    row = next((t for t in body.get("targets", []) if t.get("name") == target), None)
    layer = (row or {}).get("layers", {}).get(kind.layer)
    if not layer:
        return None
    if kind.grace:
        at = layer.get("since_ts") if layer.get("health") != "up" else None
    elif layer.get("last") == "down" and layer.get("health") == "up":
        at = layer.get("attempted_at_ts")
    else:
        at = None
    return float(at) if isinstance(at, int | float) else None


async def daemon_metrics(sb: Sandbox) -> dict[str, float]:
    """From the daemon's /metrics: ticks and their duration, the check scheduler's lag."""
    async with sb.session().get(sb.api_url + "/metrics") as resp:
        text = await resp.text()
    want = {
        "drwatch_tick_duration_seconds_count": "ticks",
        "drwatch_tick_duration_seconds_sum": "tick_duration_total_s",
        "drwatch_scheduler_lag_p99_seconds": "scheduler_lag_p99_s",
        "drwatch_scheduler_lag_max_seconds": "scheduler_lag_max_s",
    }
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in want:
                out[want[sample.name]] = sample.value
    if out.get("ticks"):
        out["tick_duration_mean_s"] = out["tick_duration_total_s"] / out["ticks"]
    return out


async def new_incident(api: DaemonApi, target: str, known: set[str], deadline_s: float) -> Incident:
    async with asyncio.timeout(deadline_s):
        while True:
            for inc in await api.incidents() or []:
                if inc.id not in known and target in inc.targets:
                    return inc
            await asyncio.sleep(POLL_S)


async def incident_ids(api: DaemonApi) -> set[str]:
    return {i.id for i in await api.incidents() or []}


async def wait_ended(api: DaemonApi, incident_id: str, deadline_s: float) -> None:
    async with asyncio.timeout(deadline_s):
        while True:
            found = {i.id: i for i in await api.incidents() or []}
            inc = found.get(incident_id)
            if inc is not None and inc.ended_at is not None:
                return
            await asyncio.sleep(POLL_S)


# -- the run ------------------------------------------------------------------------------


class Bench:
    def __init__(self, sb: Sandbox, cfg: Config) -> None:
        self.sb = sb
        self.cfg = cfg
        self.chaos = Chaos(sb)
        self.api = DaemonApi(sb.api_url, sb.session())

    async def settle(self) -> None:
        if not await wait_healthy(self.sb, self.api, HEALTHY_DEADLINE_S):
            raise SystemExit("bench: the sandbox did not become healthy again")

    async def sample(self, kind: Kind, target: str, floor_s: float) -> Sample:
        return await self.measure(
            kind.verb,
            (kind.verb,),
            kind.layer,
            target,
            lambda body: evidence_at(body, kind, target),
            open_deadline_s=3 * floor_s + 10,
            close_deadline_s=CLOSE_DEADLINE_S,
        )

    async def measure(
        self,
        name: str,
        verbs: Sequence[str],
        layer: str,
        target: str,
        evidence: Callable[[dict[str, Any]], float | None],
        *,
        open_deadline_s: float,
        close_deadline_s: float,
    ) -> Sample:
        """One sample named `name`: once healthy and after a random phase of `layer`'s
        interval, apply `verbs` to `target`, time the incident, heal, wait for its end.
        `evidence` reads the daemon's status for when the deciding evidence arrived."""
        await self.settle()
        known = await incident_ids(self.api)
        t: LayerTiming = getattr(self.cfg.timing, layer)
        await asyncio.sleep(random.uniform(0.0, t.interval))
        fault_at = time.time()
        for verb in verbs:
            await self.chaos.do(Fault(verb, target))
        s = Sample(name, target, fault_at, round(time.time() - fault_at, 4))
        try:
            inc = await new_incident(self.api, target, known, open_deadline_s)
        except TimeoutError:
            await self.chaos.do(Fault(HEAL, target))
            return s
        seen = evidence(await status(self.sb))
        s.latency_s, s.incident, s.finding = inc.opened_at - fault_at, inc.id, inc.finding
        if seen is not None:
            s.observe_s, s.decide_s = seen - fault_at, inc.opened_at - seen
        await self.chaos.do(Fault(HEAL, target))
        healed = time.time()
        await wait_ended(self.api, inc.id, close_deadline_s)
        s.closed_after_heal_s = round(time.time() - healed, 3)
        return s


async def start_daemon(sb: Sandbox) -> Config:
    cfg = enable_dry_run(sb.state_dir / CONFIG_FILE)
    await sb.watcher.start()
    api = DaemonApi(sb.api_url, sb.session())
    async with asyncio.timeout(DAEMON_UP_DEADLINE_S):
        while True:
            if await api.healthy() is not None:
                return cfg
            await asyncio.sleep(POLL_S)


def app_servers(topo: Topology) -> list[str]:
    return [i.name for i in topo.instance if i.role.value == "app_server"]


def rounds(samples: int, kinds: Sequence[K], targets: Sequence[str]) -> Iterator[tuple[K, str]]:
    """`samples` rounds of one sample of each kind (so a neighbour's load falls on all of
    them alike), the targets rotating over `targets`."""
    for i in range(samples):
        for j, kind in enumerate(kinds):
            yield kind, targets[(i * len(kinds) + j) % len(targets)]


def show(s: Sample, verbose: bool) -> None:
    if verbose:
        print(json.dumps(asdict(s)), file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    topo = default_topology()
    targets = app_servers(topo)
    kinds = [KINDS[v] for v in args.faults]
    sb = Sandbox(topo, state_dir, Options(with_watcher=False))
    samples: list[Sample] = []
    async with sb:
        cfg = await start_daemon(sb)
        bench = Bench(sb, cfg)
        floors = {k.verb: floor_of(k, cfg) for k in kinds}
        started = time.monotonic()
        for kind, target in rounds(args.samples, kinds, targets):
            s = await bench.sample(kind, target, floors[kind.verb]["floor_s"])
            samples.append(s)
            show(s, args.verbose)
        elapsed = time.monotonic() - started
        metrics = await daemon_metrics(sb)
    return {
        "kinds": {k.verb: summarize(k, floors[k.verb], samples) for k in kinds},
        "tick_interval_s": TICK_INTERVAL_S,
        "timing": cfg.timing.model_dump(),
        "dead_grace_s": cfg.policy.dead_grace,
        "dry_run": cfg.policy.dry_run,
        "targets": targets,
        "elapsed_s": round(elapsed, 1),
        "daemon_metrics": metrics,
        "samples": [asdict(s) for s in samples],
    }


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between order statistics (with 20 samples, p99 is
    nearly the maximum)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def outcomes(mine: list[Sample]) -> dict[str, Any]:
    """One kind's samples: the findings they opened (by name), how many, how many missed."""
    findings: dict[str, int] = {}
    for s in mine:
        findings[s.finding or "none"] = findings.get(s.finding or "none", 0) + 1
    missed = sum(1 for s in mine if s.latency_s is None)
    return {"findings": findings, "samples": len(mine), "missed": missed}


def spread(mine: list[Sample], floor_s: float) -> dict[str, float | None]:
    """One kind's latencies (and p99 over the floor), split at the deciding evidence."""
    lat = [s.latency_s for s in mine if s.latency_s is not None]
    p99 = quantile(lat, 0.99)
    observe = [s.observe_s for s in mine if s.observe_s is not None]
    decide = [s.decide_s for s in mine if s.decide_s is not None]
    return {
        "min_s": _r(min(lat, default=None)),
        "p50_s": _r(quantile(lat, 0.5)),
        "p99_s": _r(p99),
        "max_s": _r(max(lat, default=None)),
        "p99_over_floor": _r(p99 / floor_s if p99 is not None else None),
        "observe_p50_s": _r(quantile(observe, 0.5)),
        "observe_max_s": _r(max(observe, default=None)),
        "decide_p50_s": _r(quantile(decide, 0.5)),
        "decide_max_s": _r(max(decide, default=None)),
    }


def summarize(kind: Kind, floor: dict[str, float], samples: list[Sample]) -> dict[str, Any]:
    mine = [s for s in samples if s.verb == kind.verb]
    decide = [s.decide_s for s in mine if s.decide_s is not None]
    # The part of decide_s that is waiting for a tick (and, for the provider, for its
    # poll of every region to finish after the answer's attempt time).
    waits = [d - floor["dead_grace_s"] for d in decide]
    return {
        "layer": kind.layer,
        "expected_finding": kind.finding,
        **outcomes(mine),
        **floor,
        "floor_plus_tick_s": floor["floor_s"] + TICK_INTERVAL_S,
        **spread(mine, floor["floor_s"]),
        "tick_wait_p50_s": _r(quantile(waits, 0.5)),
        "tick_wait_max_s": _r(max(waits, default=None)),
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_head(finding_column: str) -> list[str]:
    return [
        f"| fault | {finding_column} | samples | floor s | p50 s | p99 s | max s | p99/floor "
        "| fault->evidence p50/max s | evidence->opened p50/max s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]


def found(k: dict[str, Any]) -> str:
    return ", ".join(f"{f} {n}" for f, n in sorted(k["findings"].items()))


def table_row(name: str, finding: str, k: dict[str, Any]) -> str:
    """One kind's row of `table_head`'s table, from its summary `k`."""
    missed = f" ({k['missed']} missed)" if k["missed"] else ""
    floor = (
        f"{k['floor_s']:g} = {k['layer_fall']}x{k['layer_interval_s']:g}"
        f"+{k['layer_timeout_s']:g}" + (f"+{k['dead_grace_s']:g}" if k["dead_grace_s"] else "")
    )
    return (
        f"| {name} | {finding} | {k['samples']}{missed} | {floor} "
        f"| {_s(k['p50_s'])} | {_s(k['p99_s'])} | {_s(k['max_s'])} "
        f"| {_s(k['p99_over_floor'])} | {_s(k['observe_p50_s'])} / {_s(k['observe_max_s'])} "
        f"| {_s(k['decide_p50_s'])} / {_s(k['decide_max_s'])} |"
    )


def table(res: dict[str, Any]) -> str:
    lines = table_head("finding (layer)")
    for verb, k in res["kinds"].items():
        lines.append(table_row(verb, f"{found(k)} ({k['layer']})", k))
    m = res["daemon_metrics"]
    lines += [
        "",
        f"Tick every {res['tick_interval_s']:g} s + its duration (mean "
        f"{1000 * m.get('tick_duration_mean_s', 0):.1f} ms over {m.get('ticks', 0):.0f} ticks); "
        f"check schedule lag, last window: p99 {1000 * m.get('scheduler_lag_p99_s', 0):.1f} ms, "
        f"max {1000 * m.get('scheduler_lag_max_s', 0):.1f} ms. Dry run: {res['dry_run']}.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_args(p, sorted(KINDS), list(KINDS), "fault kinds to measure (default: all)")
    return p.parse_args(argv)


def add_run_args(
    p: argparse.ArgumentParser, kinds: list[str], default: list[str], faults_help: str | None
) -> None:
    """--samples, --faults (of `kinds`), --seed, --state-dir, --verbose, --out."""
    p.add_argument("--samples", type=int, default=20, help="per fault kind")
    p.add_argument("--faults", nargs="+", choices=kinds, default=default, help=faults_help)
    p.add_argument("--seed", type=int, help="seed for the phase jitter")
    p.add_argument("--state-dir", type=Path, help="keep the sandbox's files here (else a temp dir)")
    p.add_argument("--verbose", action="store_true", help="print each sample to stderr")
    p.add_argument("--out", type=Path)


def in_state_dir(
    state_dir: Path | None,
    prefix: str,
    work: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Run `work` on `state_dir`, or else on a temporary directory removed afterwards."""
    path = state_dir or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return asyncio.run(work(path))
    finally:
        if state_dir is None:
            shutil.rmtree(path, ignore_errors=True)


def publish(
    res: dict[str, Any],
    info: dict[str, Any],
    module: str,
    argv: list[str],
    *,
    table: Callable[[dict[str, Any]], str],
    out: Path | None,
) -> None:
    """Stamp the result (machine, command, time) and print it (and write it to `out`)."""
    res.update(
        machine=info,
        command=f"python -m bench.{module} " + " ".join(argv),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    emit(table(res), res, out)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    logs.configure("console", "error")
    info = machine(
        drwatch=__version__,
        platform=platform.platform(),
        loadavg_at_start=list(os.getloadavg()),
    )
    res = in_state_dir(args.state_dir, "drwatch-bench-detection-", lambda d: run(args, d))
    info["loadavg_at_end"] = list(os.getloadavg())
    publish(res, info, "detection", argv, table=table, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
