"""Benchmark: the chaos soak. Random faults against the sandbox for a long run, and an
account of every action drwatch took, from the daemon's incidents and the cloud's view.

    ./dev bench soak --minutes 30 --seed 1 --out bench/results/soak.json

What runs: one sandbox (moto, the fault-injecting front, simulated agents and apps,
canaries) with the real daemon (`drwatch run`, its own process) watching it, started by
`drwatch.sandbox.world.Sandbox` exactly as `drwatch sandbox` and the drill runner start
it, with its default config (nothing is dry-run: playbooks really run).

The run is a sequence of episodes, drawn from a seeded generator:
  1. one fault, or (with `--overlap`) two at once in different zones, each held a random
     10-60 s, applied through the sandbox's fault engine (`Chaos`, the code behind the
     control API and drill events); with `--kill-rate`, a `kill-watcher` (SIGKILL of the
     daemon, restarted 2 s later on the same state directory) lands inside the episode;
  2. heal (a fault whose instance drwatch has meanwhile replaced is not healed: healing a
     `stop-instance` would start the retired instance again; a `terminate-instance`
     cannot heal, and counts as lasting until the episode settles, i.e. until drwatch's
     replacement is up);
  3. wait until every incident has ended and the daemon sees everything healthy, then
     audit the cloud (below).

What each fault warrants (`Verb.acts`, `Verb.alerts`) is stated once in `VERBS`:
  acts    drwatch may run a playbook on the fault's targets (an instance stopped, failing
          or hanging may be replaced; a zone outage's instances too);
  alerts  drwatch must open an incident naming a target when the fault lasts at least
          `--detect` seconds (kill-agent is an alert with no playbook).
Faults with neither (a flapping app, a full disk, a throttled API, a cut uplink) must
leave no playbook run behind.

What is reported:
  false_runs       a playbook run (any step started) on a target that no fault allowing
                   action covered from 5 s before the incident opened to `--after` s after
                   its heal;
  missed           an `alerts` fault held `--detect` s or longer with no incident naming
                   its target (or its zone/region) opened while it lasted (plus 5 s);
  doubles          from the provider's own view after each episode: a Name with more than
                   one running instance, more instances running in a group than the
                   topology gives it, or the Elastic IP not on exactly one instance;
  left_open        incidents still open after the final heal and `--settle` seconds;
  unsettled        episodes after which the world did not settle within `--settle`;
  daemon           peak RSS (sampled every 2 s), kills, and restarts nobody asked for
                   (a daemon that exits on its own is started again, as systemd would).

Settled means: every incident ended and the daemon's status is `all_healthy` with every
`health` in it `up`, except a target the daemon lists as `retired` (replaced and fenced
by a playbook: stopped is its rightful state).

Not a test: nothing here asserts. See bench/README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import emit, machine, measure_table
from drwatch import logs
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.daemon_api import DaemonApi, Incident
from drwatch.sandbox.faults import HEAL, WATCHER, Fault
from drwatch.sandbox.topology import GROUP_TAG, Topology, default_topology
from drwatch.sandbox.world import Options, Sandbox

POLL_S = 1.0
RUN_STATUSES = frozenset({"running", "done", "failed"})


@dataclass(frozen=True)
class Verb:
    """A fault verb, what it may be aimed at, and what drwatch owes it."""

    name: str
    targets: str  # "app" | "lb" | "zone" | "region" | "watcher"
    acts: bool
    alerts: bool
    params: tuple[tuple[str, float], ...] = ()
    heals: bool = True  # False: `heal` undoes nothing; the fault lasts until drwatch mends it


VERBS = (
    Verb("stop-instance", "app", acts=True, alerts=True),
    Verb("terminate-instance", "app", acts=True, alerts=True, heals=False),
    Verb("impair-instance", "app", acts=True, alerts=True),
    Verb("fail-app", "app", acts=True, alerts=True),
    Verb("hang-app", "app", acts=True, alerts=True),
    Verb("slow-app", "app", acts=True, alerts=True, params=(("delay", 2.0),)),
    Verb("kill-agent", "app", acts=False, alerts=True),
    Verb("flap-app", "app", acts=False, alerts=False, params=(("period", 2.0),)),
    Verb("fill-disk", "app", acts=False, alerts=False, params=(("percent", 97.0),)),
    Verb("stop-instance", "lb", acts=True, alerts=True),
    Verb("zone-outage", "zone", acts=True, alerts=True),
    Verb("api-outage", "region", acts=False, alerts=True),
    Verb("throttle-api", "region", acts=False, alerts=False),
    Verb("cut-uplink", "watcher", acts=False, alerts=False),
)


@dataclass
class Record:
    """One applied fault and the window it covered."""

    verb: str
    target: str
    zone: str | None
    affected: frozenset[str]  # instance names the fault silenced or broke
    acts: bool
    alerts: bool
    heals: bool
    applied_at: float
    healed_at: float | None = None


@dataclass
class Tally:
    episodes: int = 0
    faults: int = 0
    kills: int = 0
    unexpected_restarts: int = 0
    exits: list[str] = field(default_factory=list)
    unsettled: int = 0
    unsettled_detail: list[dict[str, Any]] = field(default_factory=list)
    doubles: list[str] = field(default_factory=list)
    peak_rss_bytes: int = 0


class World:
    """The topology's names, as the soak aims faults at them."""

    def __init__(self, topo: Topology) -> None:
        serving = topo.regions[0]
        self.inst = {i.name: i for i in topo.instance if i.region == serving}
        self.groups: dict[str, int] = {}
        for i in topo.instance:
            self.groups[i.group] = self.groups.get(i.group, 0) + 1
        self.region = serving
        # Zone outages only where no database lives: the ladder has its own drills.
        db_zones = {i.zone for i in topo.instance if i.role.value == "database"}
        self.zones = sorted({i.zone for i in self.inst.values()} - db_zones)

    def names(self, kind: str) -> list[str]:
        role = {"app": "app_server", "lb": "load_balancer"}[kind]
        return sorted(n for n, i in self.inst.items() if i.role.value == role)

    def zone_of(self, target: str) -> str | None:
        if target in self.inst:
            return self.inst[target].zone
        return target if target in self.zones else None

    def affected(self, target: str) -> frozenset[str]:
        if target in self.inst:
            return frozenset({target})
        if target in self.zones:
            return frozenset(n for n, i in self.inst.items() if i.zone == target)
        return frozenset()


class Soak:
    def __init__(self, sb: Sandbox, args: argparse.Namespace) -> None:
        self.sb = sb
        self.args = args
        self.rng = random.Random(args.seed)
        self.world = World(sb.topo)
        self.chaos = Chaos(sb)
        self.api = DaemonApi(sb.api_url, sb.session())
        self.records: list[Record] = []
        self.tally = Tally()
        self.incidents: dict[str, Incident] = {}
        self._last_pid: int | None = None
        self._killed: set[int] = set()

    # -- choosing faults ---------------------------------------------------------------------

    def _target(self, verb: Verb) -> str:
        if verb.targets in ("app", "lb"):
            return self.rng.choice(self.world.names(verb.targets))
        if verb.targets == "zone":
            return self.rng.choice(self.world.zones)
        return self.world.region if verb.targets == "region" else WATCHER

    def pick(self) -> list[tuple[Verb, str]]:
        """One fault, or two in different zones (never two on the whole region or watcher)."""
        first = self.rng.choice(VERBS)
        chosen = [(first, self._target(first))]
        if self.rng.random() < self.args.overlap and first.targets in ("app", "lb", "zone"):
            zone = self.world.zone_of(chosen[0][1])
            for _ in range(20):
                verb = self.rng.choice([v for v in VERBS if v.targets in ("app", "lb")])
                target = self._target(verb)
                if self.world.zone_of(target) != zone:
                    chosen.append((verb, target))
                    break
        return chosen

    # -- applying and healing ------------------------------------------------------------------

    async def apply(self, verb: Verb, target: str) -> Record:
        await self.chaos.do(Fault(verb.name, target, dict(verb.params)))
        rec = Record(
            verb.name, target, self.world.zone_of(target), self.world.affected(target),
            verb.acts, verb.alerts, verb.heals, time.time(),
        )  # fmt: skip
        self.records.append(rec)
        self.tally.faults += 1
        return rec

    async def heal(self, rec: Record) -> None:
        """Heal, except a stopped instance that drwatch has replaced: starting it again
        would be our double, not drwatch's. A fault that does not heal (a terminated
        instance) lasts until the episode settles: until drwatch's replacement is up."""
        await self.sb.poll()  # moto's view now, not the last reconcile's
        live = self.sb.view.named(rec.target)
        for applied in [a for a in self.chaos.active if a.fault.target == rec.target]:
            replaced = live is None or live.id != applied.resolved
            if applied.fault.verb == "stop-instance" and replaced:
                self.chaos.active.remove(applied)
        await self.chaos.do(Fault(HEAL, rec.target))
        if rec.heals:
            rec.healed_at = time.time()

    async def kill_watcher(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        pid = self.sb.watcher.pid
        if pid is None:
            return
        self._killed.add(pid)
        await self.chaos.do(Fault("kill-watcher", WATCHER, {"delay": 2.0}))
        self.chaos.active = [a for a in self.chaos.active if a.fault.verb != "kill-watcher"]
        self.tally.kills += 1

    async def episode(self) -> None:
        self.tally.episodes += 1
        hold = self.rng.uniform(10.0, 60.0)
        kill_at = self.rng.uniform(0.0, hold) if self.rng.random() < self.args.kill_rate else None
        records = []
        async with asyncio.TaskGroup() as tg:
            if kill_at is not None:
                tg.create_task(self.kill_watcher(kill_at))
            for verb, target in self.pick():
                records.append(await self.apply(verb, target))
                await asyncio.sleep(self.rng.uniform(0.0, 5.0))
            await asyncio.sleep(hold)
            for rec in records:
                await self.heal(rec)
        settled = await self.settle(self.args.settle)
        for rec in records:
            rec.healed_at = rec.healed_at or time.time()
        if not settled:
            self.tally.unsettled += 1
            self.tally.unsettled_detail.append(self._unsettled(records))
        self.audit_cloud()

    def _unsettled(self, records: list[Record]) -> dict[str, Any]:
        """What an episode that did not settle left behind: its faults and open incidents."""
        still_open = [i for i in self.incidents.values() if i.ended_at is None]
        return {
            "episode": self.tally.episodes,
            "faults": [f"{r.verb} {r.target}" for r in records],
            "open": [
                {"id": i.id, "finding": i.finding, "targets": list(i.targets)} for i in still_open
            ],
        }

    # -- watching ----------------------------------------------------------------------------

    async def settle(self, deadline_s: float) -> bool:
        """Every incident ended and the daemon sees everything healthy, within the deadline."""
        try:
            async with asyncio.timeout(deadline_s):
                while True:
                    if await self._settled():
                        return True
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            return False

    async def _settled(self) -> bool:
        found = await self.api.incidents()
        if found is None or self.sb.watcher.pid is None:
            return False
        self.incidents.update({i.id: i for i in found})
        return all(i.ended_at is not None for i in found) and bool(await self.api.healthy())

    async def watch(self) -> None:
        """Keep every incident the API shows (runs end and are kept), the daemon's peak
        RSS, and exits nobody asked for: a daemon that exits on its own is restarted
        (as systemd would) and counted."""
        while True:
            found = await self.api.incidents()
            self.incidents.update({i.id: i for i in found or []})
            pid = self.sb.watcher.pid
            if pid is not None:
                self._last_pid = pid
                self._note_rss(pid)
            elif self._last_pid is not None and self._last_pid not in self._killed:
                self._last_pid = None
                self.tally.unexpected_restarts += 1
                self.tally.exits.append(f"after episode {self.tally.episodes}: exited on its own")
                await self.sb.watcher.start()
            await asyncio.sleep(POLL_S * 2)

    def _note_rss(self, pid: int) -> None:
        try:
            rss = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return
        self.tally.peak_rss_bytes = max(self.tally.peak_rss_bytes, rss)

    def audit_cloud(self) -> None:
        """The provider's own view: one running instance per Name, groups at their size,
        the Elastic IP on exactly one instance."""
        view = self.sb.view
        running = [i for i in view.instances.values() if i.state in ("pending", "running")]
        by_name: dict[str, int] = {}
        by_group: dict[str, int] = {}
        for inst in running:
            by_name[inst.name] = by_name.get(inst.name, 0) + 1
            group = inst.tags.get(GROUP_TAG, "")
            by_group[group] = by_group.get(group, 0) + 1
        when = f"after episode {self.tally.episodes}"
        for name, n in sorted(by_name.items()):
            if n > 1:
                self.tally.doubles.append(f"{when}: {n} running instances named {name}")
        for group, n in sorted(by_group.items()):
            if group in self.world.groups and n > self.world.groups[group]:
                size = self.world.groups[group]
                self.tally.doubles.append(f"{when}: group {group} runs {n} (size {size})")
        held = [a for a, iid in view.addresses.items() if iid is not None]
        if len(view.addresses) and len(held) != len(view.addresses):
            self.tally.doubles.append(f"{when}: an Elastic IP is on no instance")

    # -- the account ---------------------------------------------------------------------------

    def _covers(self, rec: Record, inc: Incident, after_s: float) -> bool:
        healed = rec.healed_at if rec.healed_at is not None else time.time()
        in_window = rec.applied_at - 5.0 <= inc.opened_at <= healed + after_s
        return in_window and bool(rec.affected & set(inc.targets))

    def false_runs(self) -> list[dict[str, Any]]:
        out = []
        for inc in self.incidents.values():
            if not inc.playbook or not any(s.status in RUN_STATUSES for s in inc.steps):
                continue
            acting = [r for r in self.records if r.acts]
            if not any(self._covers(r, inc, self.args.after) for r in acting):
                out.append({"incident": inc.id, "playbook": inc.playbook, "targets": inc.targets})
        return out

    def unexplained(self) -> list[dict[str, Any]]:
        """Incidents (acted on or not) that no fault of any verb explains: nothing aimed at
        their targets, zone or region from 5 s before they opened to `--after` s after the
        heal, and no cut uplink then. Not a failure by itself (the issue counts runs), but
        the place to look for detection that the machine's load alone set off."""
        out = []
        for inc in self.incidents.values():
            if not any(self._explains(r, inc) for r in self.records):
                out.append({"incident": inc.id, "finding": inc.finding, "targets": inc.targets})
        return out

    def _explains(self, rec: Record, inc: Incident) -> bool:
        healed = rec.healed_at if rec.healed_at is not None else time.time()
        if not rec.applied_at - 5.0 <= inc.opened_at <= healed + self.args.after:
            return False
        if rec.target == WATCHER:
            return True
        if rec.target == self.world.region:
            return inc.region == rec.target
        return bool(rec.affected & set(inc.targets)) or inc.zone == rec.target

    def missed(self) -> list[dict[str, Any]]:
        out = []
        for rec in self.records:
            held = (rec.healed_at or time.time()) - rec.applied_at
            if not rec.alerts or held < self.args.detect:
                continue
            if not any(self._seen(rec, inc) for inc in self.incidents.values()):
                out.append({"verb": rec.verb, "target": rec.target, "held_s": round(held, 1)})
        return out

    def _seen(self, rec: Record, inc: Incident) -> bool:
        if rec.target == self.world.region:
            named = inc.region == rec.target
        else:
            named = bool(rec.affected & set(inc.targets)) or inc.zone == rec.target
        healed = rec.healed_at if rec.healed_at is not None else time.time()
        return named and rec.applied_at - 5.0 <= inc.opened_at <= healed + 5.0


async def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    sb = Sandbox(default_topology(), state_dir, Options())
    async with sb:
        soak = Soak(sb, args)
        if not await soak.settle(120.0):
            raise SystemExit("soak: the sandbox never became healthy")
        started = time.monotonic()
        end = started + args.minutes * 60
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(soak.watch())
            while time.monotonic() < end:
                await soak.episode()
                if args.verbose:
                    print(json.dumps(asdict(soak.tally)), file=sys.stderr)
            settled = await soak.settle(args.settle)
            watcher.cancel()
        left_open = [i.id for i in soak.incidents.values() if i.ended_at is None]
        return {
            "seed": args.seed,
            "minutes": args.minutes,
            "elapsed_s": round(time.monotonic() - started, 1),
            "settled_at_end": settled,
            "tally": asdict(soak.tally),
            "false_runs": soak.false_runs(),
            "missed": soak.missed(),
            "unexplained_incidents": soak.unexplained(),
            "left_open": left_open,
            "incidents": len(soak.incidents),
            "playbook_runs": sum(
                1 for i in soak.incidents.values() if any(s.status in RUN_STATUSES for s in i.steps)
            ),
            "faults": [asdict(r) | {"affected": sorted(r.affected)} for r in soak.records],
            "incident_log": [
                {
                    "id": i.id,
                    "finding": i.finding,
                    "targets": list(i.targets),
                    "zone": i.zone,
                    "region": i.region,
                    "playbook": i.playbook,
                    "outcome": i.outcome,
                    "opened_at": i.opened_at,
                    "ended_at": i.ended_at,
                    "steps": [s.status for s in i.steps],
                }
                for i in sorted(soak.incidents.values(), key=lambda i: i.opened_at)
            ],
        }


def table(res: dict[str, Any]) -> str:
    t = res["tally"]
    return measure_table(
        [
            ("seed / minutes", f"{res['seed']} / {res['minutes']}"),
            ("episodes / faults / kill -9", f"{t['episodes']} / {t['faults']} / {t['kills']}"),
            ("incidents / playbook runs", f"{res['incidents']} / {res['playbook_runs']}"),
            ("false playbook runs", str(len(res["false_runs"]))),
            ("missed incidents", str(len(res["missed"]))),
            ("incidents no fault explains", str(len(res["unexplained_incidents"]))),
            ("doubled side effects", str(len(t["doubles"]))),
            ("incidents left open after heal", str(len(res["left_open"]))),
            ("episodes that did not settle", str(t["unsettled"])),
            ("daemon peak RSS", f"{t['peak_rss_bytes'] / 2**20:.0f} MiB"),
            ("daemon restarts nobody asked for", str(t["unexpected_restarts"])),
        ]
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0, help="how long to inject faults")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--overlap", type=float, default=0.3, help="chance of two faults at once")
    p.add_argument("--kill-rate", type=float, default=0.15, help="chance of a kill -9")
    p.add_argument("--detect", type=float, default=30.0, help="seconds a fault must last")
    p.add_argument("--after", type=float, default=30.0, help="seconds after heal a run counts")
    p.add_argument("--settle", type=float, default=240.0, help="deadline to settle, seconds")
    p.add_argument("--state-dir", type=Path, help="keep the sandbox's files here")
    p.add_argument("--verbose", action="store_true", help="print the tally after each episode")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure("console", "error")
    with tempfile.TemporaryDirectory(prefix="drwatch-soak-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        res = asyncio.run(run(args, state_dir))
    emit(table(res), {"machine": machine(), **res}, args.out)


if __name__ == "__main__":
    main()
