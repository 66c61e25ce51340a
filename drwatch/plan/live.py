"""Live drills: a scenario against the real fleet, opt-in and guarded.

drwatch drill SCENARIO.toml --live --config PATH [--api URL] --approve --report REPORT.json

Only what a healthy fleet absorbs: `replace-instance` (an app server of a group with
spare capacity) and `failover-lb` (the active load balancer, with a healthy standby).
Both stop the server through the provider's API, as a real loss would; drwatch's own
detection and playbook do the rest, and the drill measures them exactly as the sandbox
drills do, writing the same report, which goes into the drill ledger as kind `live`.
`restore-test` is refused until backups are part of drwatch.

`refusals()` is pure: every reason not to start, from the scenario, the daemon's status
and the config. Any reason refuses the whole drill and nothing is touched.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from drwatch.config import Config
from drwatch.errors import ConfigError, DrwatchError
from drwatch.sandbox.daemon_api import DaemonApi, Incident
from drwatch.sandbox.scenario import Event, Scenario, _pydantic_problems
from drwatch.sandbox.verdict import DrillFacts, EventRecord, Sighting, build_report

# verb -> the role its target must have
LIVE_VERBS: dict[str, str] = {
    "replace-instance": "app_server",
    "failover-lb": "load_balancer",
    "restore-test": "",
}
NOT_YET = {"restore-test": "restore tests need drwatch's backups, which this build does not have"}
POLL_S = 1.0
DEFAULT_RTO_S = 600.0


def parse_live(data: dict[str, Any]) -> Scenario:
    """The scenario (same format as sandbox drills), with only live verbs; ConfigError
    names every problem. Targets are checked against the fleet later (refusals)."""
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_pydantic_problems(err)) from None
    problems = []
    for i, ev in enumerate(sc.event):
        if ev.do not in LIVE_VERBS:
            problems.append(
                f"event[{i}].do: {ev.do!r} is not a live drill verb "
                f"(live: {', '.join(sorted(LIVE_VERBS))}); faults belong in the sandbox"
            )
        if ev.at > sc.duration:
            problems.append(f"event[{i}].at: {ev.at:g}s is after the end ({sc.duration:g}s)")
    if not sc.event:
        problems.append("event: a live drill needs at least one event")
    if problems:
        raise ConfigError(problems)
    return sc


def _targets(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(t.get("name")): t for t in status.get("targets") or [] if isinstance(t, Mapping)}


def _healthy(target: Mapping[str, Any]) -> bool:
    layers = target.get("layers") or {}
    return bool(layers) and all(
        isinstance(v, Mapping) and v.get("health") == "up" for v in layers.values()
    )


def _state_refusals(status: Mapping[str, Any]) -> list[str]:
    out = []
    watcher = status.get("watcher") or {}
    if watcher.get("paused"):
        out.append("drwatch is paused: it would not recover what the drill takes away")
    if watcher.get("dry_run"):
        out.append("drwatch is in dry-run mode: it would not recover what the drill takes away")
    if watcher.get("state") not in ("ok", None):
        out.append(f"drwatch is {watcher.get('state')}, not ok ({watcher.get('reason') or '-'})")
    for f in status.get("findings") or []:
        out.append(f"finding open: {f.get('finding')}: {f.get('evidence')}")
    for inc in status.get("open_incidents") or []:
        out.append(f"incident open: {inc.get('id')} {inc.get('finding')} ({inc.get('state')})")
    return out


def _capacity_refusal(
    cfg: Config, target: Mapping[str, Any], fleet: Mapping[str, Mapping[str, Any]], taken: int
) -> str | None:
    """The group must keep enough healthy members after losing its drill targets: at
    least the share the blast radius leaves (and one), plus a standby for a load balancer."""
    group = str(target.get("group"))
    members = [t for t in fleet.values() if t.get("group") == group]
    healthy = sum(1 for t in members if _healthy(t))
    gcfg = cfg.group(group)
    size = gcfg.size if gcfg and gcfg.size else len(members)
    floor = max(1, math.ceil(size * (1 - cfg.policy.blast_radius)))
    left = healthy - taken
    if left < floor:
        return (
            f"group {group} lacks spare capacity: {healthy} of {size} healthy; losing "
            f"{taken} leaves {left}, under its minimum of {floor} (policy.blast_radius)"
        )
    return None


def _event_refusals(cfg: Config, sc: Scenario, fleet: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = []
    per_group: dict[str, int] = {}
    for ev in sc.event:
        if ev.do in NOT_YET:
            out.append(f"{ev.do} {ev.target}: {NOT_YET[ev.do]}")
            continue
        target = fleet.get(ev.target)
        if target is None:
            out.append(f"{ev.do} {ev.target}: no such instance in the fleet drwatch watches")
            continue
        if target.get("role") != LIVE_VERBS[ev.do]:
            out.append(
                f"{ev.do} needs a {LIVE_VERBS[ev.do]}; {ev.target} is a {target.get('role')}"
            )
            continue
        group = str(target.get("group"))
        per_group[group] = per_group.get(group, 0) + 1
        problem = _capacity_refusal(cfg, target, fleet, per_group[group])
        if problem:
            out.append(f"{ev.do} {ev.target}: {problem}")
    return out


def refusals(
    cfg: Config, sc: Scenario, status: Mapping[str, Any] | None, approved_by: str
) -> list[str]:
    """Every reason not to run this live drill now (empty: go)."""
    out = []
    if not approved_by:
        out.append(
            "a live drill stops real servers: approve it explicitly with --approve "
            "(and say who with --by NAME)"
        )
    if "instance" in cfg.policy.approval_required:
        out.append(
            "policy.approval_required includes instance: drwatch would wait for an approval "
            "instead of recovering, and the drill would measure the wait"
        )
    if status is None:
        return [*out, "the daemon's status API did not answer: the fleet's state is unknown"]
    out += _state_refusals(status)
    out += _event_refusals(cfg, sc, _targets(status))
    return out


@dataclass
class LiveSeen:
    events: list[EventRecord] = field(default_factory=list)
    incidents: dict[str, Incident] = field(default_factory=dict)
    sightings: dict[tuple[str, tuple[str, ...], str | None], Sighting] = field(default_factory=dict)
    api_answered: bool = False


class LiveFleet:
    """Stops a server through the provider: the one side effect a live drill has."""

    def __init__(self, provider: Any, status: Mapping[str, Any]) -> None:
        self.provider = provider
        self.targets = _targets(status)

    async def apply(self, ev: Event) -> str:
        target = self.targets[ev.target]
        region, iid = str(target.get("region")), str(target.get("id"))
        await self.provider.stop_instance(region, iid)
        return f"stopped {ev.target} ({iid}) in {region}"


async def _poll(api: DaemonApi, seen: LiveSeen) -> None:
    found = await api.incidents()
    if found is not None:
        seen.api_answered = True
        seen.incidents.update((i.id, i) for i in found)
    now = time.time()
    for f in await api.findings() or []:
        key = (f.finding, f.targets, f.data_class)
        if key not in seen.sightings:
            facts = tuple(sorted(f.facts.items()))
            seen.sightings[key] = Sighting(
                f.finding, f.targets, f.data_class, now, f.evidence, facts
            )


async def _timeline(
    fleet: LiveFleet, api: DaemonApi, sc: Scenario, start: float, seen: LiveSeen
) -> None:
    t0 = time.monotonic()
    pending = sorted(sc.event, key=lambda e: e.at)
    while time.monotonic() - t0 < sc.duration:
        while pending and time.monotonic() - t0 >= pending[0].at:
            ev = pending.pop(0)
            at_s = round(time.time() - start, 3)
            try:
                result = await fleet.apply(ev)
                seen.events.append(EventRecord(at_s, ev.do, ev.target, result=result))
            except (DrwatchError, TimeoutError) as err:
                seen.events.append(EventRecord(at_s, ev.do, ev.target, error=str(err) or "timeout"))
        await _poll(api, seen)
        await asyncio.sleep(POLL_S)
    await _poll(api, seen)


async def run_live(
    cfg: Config,
    sc: Scenario,
    *,
    api_url: str,
    provider: Any,
    session: aiohttp.ClientSession,
    status: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Run an approved, unrefused live drill; its report (the sandbox drills' format)."""
    start = time.time()
    seen = LiveSeen()
    api = DaemonApi(api_url, session)
    await _timeline(LiveFleet(provider, status), api, sc, start, seen)
    facts = DrillFacts(
        start=start,
        healthy_at_s=0.0,
        ended_at_s=round(time.time() - start, 3),
        events=tuple(seen.events),
        incidents=tuple(sorted(seen.incidents.values(), key=lambda i: i.opened_at)),
        api_answered=seen.api_answered,
        rto_s=sc.objectives.rto or cfg.objectives.rto or DEFAULT_RTO_S,
        rpo_s=sc.objectives.rpo or cfg.objectives.rpo,
        sightings=tuple(sorted(seen.sightings.values(), key=lambda s: s.first_seen)),
    )
    # Incidents that were open before the drill are not its own (it refuses to start with any).
    report = build_report(sc, facts)
    report["kind"] = "live"
    return report
