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
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import detection
from bench.common import machine
from bench.detection import (
    CLOSE_DEADLINE_S,
    DAEMON_UP_DEADLINE_S,
    POLL_S,
    Sample,
    add_run_args,
    app_servers,
    daemon_metrics,
    found,
    in_state_dir,
    outcomes,
    publish,
    rounds,
    show,
    spread,
    table_head,
    table_row,
)
from drwatch import __version__, logs
from drwatch.config import Config, LayerTiming, load
from drwatch.daemon import TICK_INTERVAL_S
from drwatch.sandbox.cluster import WatcherApis
from drwatch.sandbox.drill import HEALTHY_DEADLINE_S
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


class Bench(detection.Bench):
    """detection.py's, reading drwatch-1's API and waiting until every watcher is healthy."""

    def __init__(self, sb: Sandbox, cfg: Config) -> None:
        super().__init__(sb, cfg)
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

    async def sample_of(self, kind: Kind, target: str, floor_s: float) -> Sample:
        return await self.measure(
            kind.name,
            kind.verbs,
            kind.layers[0],
            target,
            lambda body: evidence_at(body, kind, target),
            open_deadline_s=3 * floor_s + 30,
            close_deadline_s=CLOSE_DEADLINE_S + 60,
        )


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
        for kind, target in rounds(args.samples, kinds, targets):
            s = await bench.sample_of(kind, target, floors[kind.name]["floor_s"])
            samples.append(s)
            if args.watchers > 1:
                leaders.append(await leader_changes(sb))
            show(s, args.verbose)
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


def summarize(kind: Kind, floor: dict[str, float], samples: list[Sample]) -> dict[str, Any]:
    mine = [s for s in samples if s.verb == kind.name]
    return {
        "layers": list(kind.layers),
        "expected_finding": kind.finding,
        **outcomes(mine),
        **floor,
        **spread(mine, floor["floor_s"]),
    }


def table(res: dict[str, Any]) -> str:
    lines = [
        f"watchers: {res['watchers']}, timing: {res['timing_source']}",
        "",
        *table_head("finding"),
    ]
    for name, k in res["kinds"].items():
        lines.append(table_row(name, found(k), k))
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
    add_run_args(p, sorted(KINDS), ["fail-app", "stop-instance", "kill-agent"], None)
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
    res = in_state_dir(args.state_dir, "drwatch-bench-cdetect-", lambda d: measured(args, d))
    one_min = [x[0] for x in res["loadavg_each_minute"]]
    info["loadavg_1m_min_mean_max"] = (
        [min(one_min), round(sum(one_min) / len(one_min), 2), max(one_min)] if one_min else []
    )
    publish(res, info, "cluster_detection", argv, table=table, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
