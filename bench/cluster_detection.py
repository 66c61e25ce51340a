"""Benchmark: detection latency with several watchers on etcd against one, and the
detection of a silent host with the shipped production timing.

    ./dev bench cluster_detection --watchers 3 --samples 20 --out r.json
    ./dev bench cluster_detection --watchers 3 --timing production --faults silent-host

The method is bench/detection.py's (read its doc): one sandbox, the real daemons (`drwatch
run`, each its own process) in dry run, per sample wait until healthy and a random
fraction of the deciding layer's interval, apply a fault to an app server with the
sandbox's fault engine, take the incident's own `opened_at` minus the wall time just
before the fault, heal, wait until the incident has ended. What this adds:

- `--watchers N`: the sandbox's `--watchers` world (a local etcd, drwatch-1 .. drwatch-N,
  `[cluster]` with the sandbox's lease timing). Every watcher runs in dry run. The
  incident is read from drwatch-1's API (a follower shows the leader's incidents); its
  `opened_at` is the leader's clock at the tick that opened it (same machine clock).
- `--timing production`: the rendered configs lose their `[timing.*]` sections and the
  sandbox's `dead_grace`, so the daemons run with what drwatch/config.py ships (provider
  10 s / 5 s / fall 2; agent, app, canary 5 s / 2 s / fall 3; `policy.dead_grace` and
  `policy.corroborated_grace` as shipped). `--policy KEY=VALUE` adds lines under
  `[policy]` (e.g. `--policy corroborated_grace='"30s"'` for the old behaviour).
- the kind `host-down`, the issue's "silent host": `kill-agent` and `fail-app` on the same
  host (the agent's port refuses, the app answers 500; the provider still says running)
  -> `instance_unreachable`, which counts only after the grace. Both layers fail at
  once, as when every service on a host is down or its firewall rejects. (A host that
  only times out stays `instance_suspect` by design, whatever the grace: silence without
  the provider's word is never dead, docs/failure-detection.md.) Its floor: fall x
  interval + timeout + the grace that applies: `dead_grace` alone, `corroborated_grace`
  with a vantage quorum of two or more watchers.

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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import emit, machine
from bench.detection import (
    CLOSE_DEADLINE_S,
    DAEMON_UP_DEADLINE_S,
    POLL_S,
    Sample,
    app_servers,
    daemon_metrics,
    incident_ids,
    new_incident,
    quantile,
    status,
    wait_ended,
)
from drwatch import __version__, logs
from drwatch.config import Config, LayerTiming, load
from drwatch.daemon import TICK_INTERVAL_S
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.cluster import WatcherApis
from drwatch.sandbox.drill import HEALTHY_DEADLINE_S
from drwatch.sandbox.faults import HEAL, Fault
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, Sandbox


@dataclass(frozen=True)
class Kind:
    """Fault verbs applied together to one host, the layers that decide, the finding."""

    name: str
    verbs: tuple[str, ...]
    layers: tuple[str, ...]  # fields of TimingConfig; the slowest decides
    finding: str
    grace: bool  # failure seen from here: a grace on top of hysteresis


KINDS = {
    k.name: k
    for k in (
        Kind("fail-app", ("fail-app",), ("app",), "app_failed", grace=True),
        Kind("stop-instance", ("stop-instance",), ("provider",), "instance_stopped", grace=False),
        Kind("kill-agent", ("kill-agent",), ("agent",), "agent_down", grace=True),
        Kind(
            "host-down",
            ("kill-agent", "fail-app"),
            ("agent", "app"),
            "instance_unreachable",
            grace=True,
        ),
    )
}


def grace_of(kind: Kind, cfg: Config) -> float:
    if not kind.grace:
        return 0.0
    quorum = cfg.cluster.quorum if cfg.cluster is not None else 1
    if kind.finding == "instance_unreachable" and quorum >= 2:
        return min(cfg.policy.corroborated_grace, cfg.policy.dead_grace)
    return cfg.policy.dead_grace


def floor_of(kind: Kind, cfg: Config) -> dict[str, float]:
    """The slowest deciding layer's hysteresis (fall x interval + timeout), plus the grace."""
    worst = 0.0
    row: dict[str, float] = {}
    for layer in kind.layers:
        t: LayerTiming = getattr(cfg.timing, layer)
        if t.fall * t.interval + t.timeout >= worst:
            worst = t.fall * t.interval + t.timeout
            row = {"layer_interval_s": t.interval, "layer_timeout_s": t.timeout}
            row["layer_fall"] = t.fall
    grace = grace_of(kind, cfg)
    return {**row, "dead_grace_s": grace, "floor_s": worst + grace}


def evidence_at(body: dict[str, Any], kind: Kind, target: str) -> float | None:
    """When the deciding evidence arrived (the daemon's status): the latest `since` of
    the deciding layers once none is up; for the provider, its latest attempt while the
    health is still up (see bench/detection.py)."""
    row = next((t for t in body.get("targets", []) if t.get("name") == target), None)
    layers = (row or {}).get("layers", {})
    if not kind.grace:
        layer = layers.get(kind.layers[0]) or {}
        if layer.get("last") == "down" and layer.get("health") == "up":
            at = layer.get("attempted_at_ts")
            return float(at) if isinstance(at, int | float) else None
        return None
    sinces = []
    for name in kind.layers:
        layer = layers.get(name) or {}
        at = layer.get("since_ts") if layer.get("health") not in (None, "up") else None
        if not isinstance(at, int | float):
            return None
        sinces.append(float(at))
    return max(sinces)


# -- the configs ---------------------------------------------------------------------------


def production_timing(text: str) -> str:
    """Drop every [timing.*] section and the sandbox's dead_grace: the shipped defaults."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped.startswith("[timing.")
        if skipping or stripped.startswith("dead_grace ="):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def provider_timing(text: str, interval: str, timeout: str) -> str:
    """Set [timing.provider]'s interval and timeout (to compare one watcher with the
    cluster sandbox, whose watchers share one cloud and poll it every 3 s)."""
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[timing.provider]" and stripped.startswith("interval ="):
            out.append(f'interval = "{interval}"')
        elif section == "[timing.provider]" and stripped.startswith("timeout ="):
            out.append(f'timeout = "{timeout}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def prepare_config(
    path: Path, *, production: bool, policy: list[str], provider: str | None = None
) -> Config:
    text = path.read_text(encoding="utf-8")
    if "\n[policy]\n" not in text or "dry_run" in text:
        raise SystemExit(f"bench: unexpected [policy] section in {path}")
    if production:
        text = production_timing(text)
    elif provider:
        interval, _, timeout = provider.partition(",")
        text = provider_timing(text, interval, timeout)
    lines = "".join(f"{p}\n" for p in ["dry_run = true", *policy])
    path.write_text(text.replace("\n[policy]\n", f"\n[policy]\n{lines}", 1), encoding="utf-8")
    cfg = load(path)
    if not cfg.policy.dry_run:
        raise SystemExit("bench: dry_run did not take")
    return cfg


# -- the run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, sb: Sandbox, cfg: Config) -> None:
        self.sb = sb
        self.cfg = cfg
        self.chaos = Chaos(sb)
        self.apis = WatcherApis(sb.api_urls, sb.session())
        self.api = self.apis.apis[0]

    async def settle(self) -> None:
        try:
            async with asyncio.timeout(HEALTHY_DEADLINE_S):
                while not await self.healthy():  # noqa: ASYNC110 (polling an HTTP API)
                    await asyncio.sleep(0.5)
        except TimeoutError:
            raise SystemExit("bench: the sandbox did not become healthy again") from None

    async def healthy(self) -> bool:
        """Every target up on every watcher (and, with several, one of them leads)."""
        if len(self.sb.watchers) == 1:
            return bool(await self.api.healthy())
        return await self.apis.healthy()

    async def sample(self, kind: Kind, target: str, floor_s: float) -> Sample:
        await self.settle()
        known = await incident_ids(self.api)
        t: LayerTiming = getattr(self.cfg.timing, kind.layers[0])
        await asyncio.sleep(random.uniform(0.0, t.interval))
        fault_at = time.time()
        for verb in kind.verbs:
            await self.chaos.do(Fault(verb, target))
        s = Sample(kind.name, target, fault_at, round(time.time() - fault_at, 4))
        try:
            inc = await new_incident(self.api, target, known, 3 * floor_s + 30)
        except TimeoutError:
            await self.chaos.do(Fault(HEAL, target))
            return s
        seen = evidence_at(await status(self.sb), kind, target)
        s.latency_s, s.incident, s.finding = inc.opened_at - fault_at, inc.id, inc.finding
        if seen is not None:
            s.observe_s, s.decide_s = seen - fault_at, inc.opened_at - seen
        await self.chaos.do(Fault(HEAL, target))
        healed = time.time()
        await wait_ended(self.api, inc.id, CLOSE_DEADLINE_S + 60)
        s.closed_after_heal_s = round(time.time() - healed, 3)
        return s


async def start_daemons(sb: Sandbox, args: argparse.Namespace) -> Config:
    cfgs = [
        prepare_config(
            w.config_path,
            production=args.timing == "production",
            policy=args.policy,
            provider=args.provider_timing,
        )
        for w in sb.watchers
    ]
    for watcher in sb.watchers:
        await watcher.start()
    apis = WatcherApis(sb.api_urls, sb.session())
    async with asyncio.timeout(DAEMON_UP_DEADLINE_S):
        while not all([await a.healthy() is not None for a in apis.apis]):  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
    return cfgs[0]


async def leader_changes(sb: Sandbox) -> str | None:
    return await WatcherApis(sb.api_urls, sb.session()).leader()


async def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    topo = default_topology()
    targets = app_servers(topo)
    kinds = [KINDS[v] for v in args.faults]
    sb = Sandbox(topo, state_dir, Options(with_watcher=False, watchers=args.watchers))
    samples: list[Sample] = []
    leaders: list[str | None] = []
    async with sb:
        cfg = await start_daemons(sb, args)
        bench = Bench(sb, cfg)
        floors = {k.name: floor_of(k, cfg) for k in kinds}
        started = time.monotonic()
        for i in range(args.samples):
            for j, kind in enumerate(kinds):
                target = targets[(i * len(kinds) + j) % len(targets)]
                s = await bench.sample(kind, target, floors[kind.name]["floor_s"])
                samples.append(s)
                if args.watchers > 1:
                    leaders.append(await leader_changes(sb))
                if args.verbose:
                    print(json.dumps(asdict(s)), file=sys.stderr, flush=True)
        elapsed = time.monotonic() - started
        metrics = await daemon_metrics(sb)
    return {
        "watchers": args.watchers,
        "timing_source": args.timing,
        "policy_lines": args.policy,
        "kinds": {k.name: summarize(k, floors[k.name], samples) for k in kinds},
        "tick_interval_s": TICK_INTERVAL_S,
        "timing": cfg.timing.model_dump(),
        "policy": cfg.policy.model_dump(),
        "cluster": cfg.cluster.model_dump(mode="json") if cfg.cluster else None,
        "leaders_after_each_sample": leaders,
        "targets": targets,
        "elapsed_s": round(elapsed, 1),
        "daemon_metrics": metrics,
        "samples": [asdict(s) for s in samples],
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(kind: Kind, floor: dict[str, float], samples: list[Sample]) -> dict[str, Any]:
    mine = [s for s in samples if s.verb == kind.name]
    lat = [s.latency_s for s in mine if s.latency_s is not None]
    p99 = quantile(lat, 0.99)
    findings: dict[str, int] = {}
    for s in mine:
        findings[s.finding or "none"] = findings.get(s.finding or "none", 0) + 1
    observe = [s.observe_s for s in mine if s.observe_s is not None]
    decide = [s.decide_s for s in mine if s.decide_s is not None]
    return {
        "layers": list(kind.layers),
        "expected_finding": kind.finding,
        "findings": findings,
        "samples": len(mine),
        "missed": len(mine) - len(lat),
        **floor,
        "min_s": _r(min(lat, default=None)),
        "p50_s": _r(quantile(lat, 0.5)),
        "p99_s": _r(p99),
        "max_s": _r(max(lat, default=None)),
        "p99_over_floor": _r(p99 / floor["floor_s"] if p99 is not None else None),
        "observe_p50_s": _r(quantile(observe, 0.5)),
        "observe_max_s": _r(max(observe, default=None)),
        "decide_p50_s": _r(quantile(decide, 0.5)),
        "decide_max_s": _r(max(decide, default=None)),
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(res: dict[str, Any]) -> str:
    lines = [
        f"watchers: {res['watchers']}, timing: {res['timing_source']}",
        "",
        "| fault | finding | samples | floor s | p50 s | p99 s | max s | p99/floor "
        "| fault->evidence p50/max s | evidence->opened p50/max s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, k in res["kinds"].items():
        found = ", ".join(f"{f} {n}" for f, n in sorted(k["findings"].items()))
        missed = f" ({k['missed']} missed)" if k["missed"] else ""
        floor = (
            f"{k['floor_s']:g} = {k['layer_fall']}x{k['layer_interval_s']:g}"
            f"+{k['layer_timeout_s']:g}" + (f"+{k['dead_grace_s']:g}" if k["dead_grace_s"] else "")
        )
        lines.append(
            f"| {name} | {found} | {k['samples']}{missed} | {floor} "
            f"| {_s(k['p50_s'])} | {_s(k['p99_s'])} | {_s(k['max_s'])} "
            f"| {_s(k['p99_over_floor'])} | {_s(k['observe_p50_s'])} / {_s(k['observe_max_s'])} "
            f"| {_s(k['decide_p50_s'])} / {_s(k['decide_max_s'])} |"
        )
    m = res["daemon_metrics"]
    lines += [
        "",
        f"drwatch-1: {m.get('ticks', 0):.0f} ticks, mean "
        f"{1000 * m.get('tick_duration_mean_s', 0):.1f} ms; check schedule lag, last window: "
        f"p99 {1000 * m.get('scheduler_lag_p99_s', 0):.1f} ms. Elapsed {res['elapsed_s']:g} s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--watchers", type=int, default=1, help="1: one watcher, no etcd")
    p.add_argument("--timing", choices=["sandbox", "production"], default="sandbox")
    p.add_argument(
        "--provider-timing",
        metavar="INTERVAL,TIMEOUT",
        help='with --timing sandbox: [timing.provider] as given (e.g. "3s,2s")',
    )
    p.add_argument("--policy", action="append", default=[], help="a line under [policy]")
    p.add_argument("--samples", type=int, default=20, help="per fault kind")
    p.add_argument(
        "--faults",
        nargs="+",
        choices=sorted(KINDS),
        default=["fail-app", "stop-instance", "kill-agent"],
    )
    p.add_argument("--seed", type=int, help="seed for the phase jitter")
    p.add_argument("--state-dir", type=Path, help="keep the sandbox's files here (else a temp dir)")
    p.add_argument("--verbose", action="store_true", help="print each sample to stderr")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def sample_load(into: list[list[float]]) -> None:
    while True:
        into.append(loadavg())
        await asyncio.sleep(60)


async def measured(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    loads: list[list[float]] = []
    sampler = asyncio.create_task(sample_load(loads))
    try:
        res = await run(args, state_dir)
    finally:
        sampler.cancel()
    res["loadavg_each_minute"] = loads
    return res


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    logs.configure("console", "error")
    info = machine(drwatch=__version__, platform=platform.platform())
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="drwatch-bench-cdetect-"))
    try:
        res = asyncio.run(measured(args, state_dir))
    finally:
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    one_min = [x[0] for x in res["loadavg_each_minute"]]
    info["loadavg_1m_min_mean_max"] = (
        [min(one_min), round(sum(one_min) / len(one_min), 2), max(one_min)] if one_min else []
    )
    res.update(
        machine=info,
        command="python -m bench.cluster_detection " + " ".join(argv),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    emit(table(res), res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
