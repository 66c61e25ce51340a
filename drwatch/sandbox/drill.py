"""The drill runner: a fresh sandbox, wait for healthy, replay the timeline, judge.

`run_drill` owns the sandbox for the drill's life and always stops it, also when the
drill is cancelled (SIGINT/SIGTERM). The verdict itself is pure (`verdict.py`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drwatch.logs import get_logger
from drwatch.sandbox import control
from drwatch.sandbox.backup_verdict import BackupSighting
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.cloud import SandboxError
from drwatch.sandbox.cluster import LeaderLog, WatcherApis
from drwatch.sandbox.daemon_api import DaemonApi, Incident
from drwatch.sandbox.faults import Fault, parse_param
from drwatch.sandbox.scenario import Event, Scenario
from drwatch.sandbox.topology import Topology
from drwatch.sandbox.verdict import DrillFacts, EventRecord, Sighting, build_report
from drwatch.sandbox.world import Options, Sandbox

log = get_logger(component="sandbox.drill")

HEALTHY_DEADLINE_S = 90.0
POLL_S = 1.0
DEFAULT_RTO_S = 120.0  # the sandbox config's objectives.rto


@dataclass
class Seen:
    """What the drill saw while it ran."""

    events: list[EventRecord] = field(default_factory=list)
    incidents: dict[str, Incident] = field(default_factory=dict)
    # (finding, targets, data class) -> its first sighting in the daemon's status
    sightings: dict[tuple[str, tuple[str, ...], str | None], Sighting] = field(default_factory=dict)
    # (backup id, location, state) -> when the drill first saw it in the catalogue
    backups: dict[tuple[str, str, str], BackupSighting] = field(default_factory=dict)
    api_answered: bool = False
    # Several watchers: who led when (None: one watcher).
    leaders: LeaderLog | None = None


def sandbox_healthy(sb: Sandbox) -> bool:
    """The sandbox's own view: every instance booted and both its ports answering."""
    hosts = list(sb.hosts.values())
    return bool(hosts) and all(h.booted and h.agent.running and h.app.running for h in hosts)


Api = DaemonApi | WatcherApis


def api_of(sb: Sandbox) -> Api:
    """The daemon's API; with several watchers, all of theirs read as one."""
    if len(sb.watchers) > 1:
        return WatcherApis(sb.api_urls, sb.session())
    return DaemonApi(sb.api_url, sb.session())


def ready(
    daemon: bool | None, *, own_watcher: bool, watching: bool, sandbox: Callable[[], bool]
) -> bool:
    """Whether the drill may start. With its own watcher, only the daemon's word counts:
    the sandbox can be healthy before the daemon has seen a single target up, and a fault
    applied then (a partition) would meet targets the daemon still takes for booting.
    Without one, the daemon's word if some API answers, else the sandbox's own view."""
    if own_watcher:
        return daemon is True and watching
    return daemon if daemon is not None else sandbox()


async def wait_healthy(sb: Sandbox, api: Api, deadline_s: float) -> bool:
    """The daemon says every target is up (or, with no watcher of its own and no status
    API, the sandbox does)."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                daemon = await api.healthy()
                own = sb.options.with_watcher
                watching = sb.watcher.pid is not None
                if ready(
                    daemon, own_watcher=own, watching=watching, sandbox=lambda: sandbox_healthy(sb)
                ):
                    return True
                await asyncio.sleep(0.5)
    except TimeoutError:
        return False


async def replay(
    chaos: Chaos,
    timeline: list[Event],
    t0: float,
    start: float,
    seen: Seen,
    *,
    end: float | None = None,
) -> None:
    """Apply each event at its time (`end`: the drill's end, monotonic, for `after_step`)."""
    for ev in timeline:
        await asyncio.sleep(max(0.0, t0 + ev.at - time.monotonic()))
        if ev.after_step is not None and not await _run_under_way(chaos.sb, ev.after_step, end):
            at_s = round(time.time() - start, 3)
            why = f"after_step {ev.after_step}: no run for it was under way before the end"
            seen.events.append(EventRecord(at_s, ev.do, ev.target, error=why))
            continue
        at_s = round(time.time() - start, 3)
        params = parse_param(ev.do, ev.param_value()) if ev.do != "heal" else {}
        try:
            result = await chaos.do(Fault(ev.do, ev.target, params))
            seen.events.append(EventRecord(at_s, ev.do, ev.target, result=result))
        except (SandboxError, TimeoutError) as err:
            seen.events.append(EventRecord(at_s, ev.do, ev.target, error=str(err) or "timeout"))
        log.info("drill.event", at_s=at_s, do=ev.do, target=ev.target)


STEP_POLL_S = 0.1


async def _run_under_way(sb: Sandbox, name: str, end: float | None) -> bool:
    """Wait until some watcher's API shows a run for an incident naming `name` past its
    first step (a step journaled done) and not finished (the leader shows it at its next
    tick; a follower once it has pulled it); False if the drill ends first."""
    api = api_of(sb)
    apis = api.apis if isinstance(api, WatcherApis) else [api]
    while True:
        for one in apis:
            for inc in await one.incidents() or []:
                done = any(s.status == "done" for s in inc.steps)
                if name in inc.targets and done and _unfinished(inc):
                    return True
        if end is not None and time.monotonic() >= end:
            return False
        await asyncio.sleep(STEP_POLL_S)


def _unfinished(inc: Incident) -> bool:
    return inc.recovered_at is None and inc.ended_at is None and inc.outcome != "failed"


async def poll_incidents(api: Api, seen: Seen) -> None:
    while True:
        await _fetch(api, seen)
        await asyncio.sleep(POLL_S)


async def _fetch(api: Api, seen: Seen) -> None:
    if isinstance(api, WatcherApis) and seen.leaders is not None:
        seen.leaders.saw(await api.leader(), time.time())
    found = await api.incidents()
    if found is not None:
        seen.api_answered = True
        seen.incidents.update((i.id, _with_history(seen.incidents.get(i.id), i)) for i in found)
    findings = await api.findings()
    now = time.time()
    # With several watchers: the rows every watcher shows (the leader takes them).
    backups = await api.backups() if isinstance(api, (DaemonApi, WatcherApis)) else None
    for backup_id, data_class, kind, location, state in backups or []:
        seen.backups.setdefault(
            (backup_id, location, state),
            BackupSighting(backup_id, data_class, kind, location, state, now),
        )
    for f in findings or []:
        # A backup finding is about a class at a location: one sighting per location.
        where = f.facts.get("location")
        key = (f.finding, f.targets, f"{f.data_class}@{where}" if where else f.data_class)
        if key not in seen.sightings:
            facts = tuple(sorted(f.facts.items()))
            seen.sightings[key] = Sighting(
                f.finding, f.targets, f.data_class, now, f.evidence, facts
            )


def _with_history(before: Incident | None, now: Incident) -> Incident:
    """The incident as read now, with every outcome it has shown so far, in order."""
    seen = before.outcomes_seen if before is not None else ()
    if now.outcome is not None and (not seen or seen[-1] != now.outcome):
        seen = (*seen, now.outcome)
    return replace(now, outcomes_seen=seen)


async def _timeline(sb: Sandbox, chaos: Chaos, sc: Scenario, start: float, seen: Seen) -> None:
    """Replay the events and let the clock run to `duration`, polling incidents meanwhile."""
    api = api_of(sb)
    t0 = time.monotonic()
    poller = asyncio.create_task(poll_incidents(api, seen))
    try:
        await replay(chaos, sc.timeline(), t0, start, seen, end=t0 + sc.duration)
        await asyncio.sleep(max(0.0, t0 + sc.duration - time.monotonic()))
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    await _fetch(api, seen)


async def run_drill(
    sc: Scenario, topo: Topology, state_dir: Path, options: Options | None = None
) -> dict[str, Any]:
    """Run one drill end to end and return its report (see verdict.build_report)."""
    options = replace(options or Options(), api_token=True)  # pause, resume: the API
    start = time.time()
    seen = Seen()
    healthy_at: float | None = None
    if sc.postgres:
        options = replace(options, postgres=True)
    if sc.backups:
        options = replace(
            options, backups=True, watcher_key=sc.watcher_key, backup_rpo=sc.objectives.rpo
        )
    if sc.watchers > 1:
        options = replace(options, watchers=sc.watchers)
        seen.leaders = LeaderLog(start)
    sb = Sandbox(topo, state_dir, options)
    chaos = control.attach(sb)
    data = None
    service = None
    async with sb:
        api = api_of(sb)
        if await wait_healthy(sb, api, HEALTHY_DEADLINE_S):
            healthy_at = round(time.time() - start, 3)
            log.info("drill.healthy", at_s=healthy_at)
            await _timeline(sb, chaos, sc, start, seen)
            data = await sb.databases.data_facts()
            service = await sb.probe_service()
    facts = DrillFacts(
        start=start,
        healthy_at_s=healthy_at,
        ended_at_s=round(time.time() - start, 3),
        events=tuple(seen.events),
        incidents=tuple(sorted(seen.incidents.values(), key=lambda i: i.opened_at)),
        api_answered=seen.api_answered,
        rto_s=sc.objectives.rto or DEFAULT_RTO_S,
        rpo_s=sc.objectives.rpo,
        sightings=tuple(sorted(seen.sightings.values(), key=lambda s: s.first_seen)),
        backups=tuple(sorted(seen.backups.values(), key=lambda s: s.first_seen)),
        data=data,
        service=service,
    )
    report = build_report(sc, facts)
    if seen.leaders is not None:
        report["leaders"] = seen.leaders.terms
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
