"""The composition root: the only place concrete adapters are built and wired.

`run_daemon(cfg)` builds the provider, the observers and their scheduler, the health
store, the incident store, the runner, the cycle, the web app (API, /metrics, status
page) and the alerter; then runs discovery, provider polls, checks and the tick until
SIGTERM/SIGINT. Shutdown is cancellation: every task belongs to one TaskGroup.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
from aiohttp import web

from drwatch import __version__, logs
from drwatch.act.approvals import StepApprovals
from drwatch.act.base import DumpRestore
from drwatch.act.wiring import build_runner, region_setup
from drwatch.alerts.alerter import Alerter
from drwatch.alerts.model import (
    AlertInput,
    alert_for_incident,
    rto_alert,
    watcher_impaired_alert,
)
from drwatch.assess.readiness import (
    ReadinessConfig,
    ReadinessInput,
    ReadinessReport,
    assess_readiness,
    regional_fallback,
)
from drwatch.assess.regions import serving_regions
from drwatch.assess.trends import assess_trends
from drwatch.backup.alerting import backup_alerts
from drwatch.backup.restore_stream import AgentDumpRestore
from drwatch.backup.wiring import fleet_deps, start_backups
from drwatch.cluster.errors import TickNotSharedError
from drwatch.cluster.incidents import IncidentMirror
from drwatch.cluster.leader import Election
from drwatch.cluster.node import ClusterNode, SharedControls, Solo, Vantage, follower_report
from drwatch.cluster.wiring import build_cluster
from drwatch.config import Config
from drwatch.cycle import Cycle, SummaryLog, TickReport, WatcherState
from drwatch.decide.rto import RtoPolicy
from drwatch.errors import ConfigError, ProviderError
from drwatch.fields import split_host_port
from drwatch.incidents import IncidentStore, IncidentWriter
from drwatch.ledger import DrillLedger
from drwatch.model import Fleet, Observation, Snapshot
from drwatch.model.findings import Finding
from drwatch.model.regions import AddressBook
from drwatch.model.snapshot import Discovery
from drwatch.notify import Notifier, notifier_from_env, watchdog_interval
from drwatch.observe.agent import AgentClient, AgentObserver, client_tls_context
from drwatch.observe.app import AppObserver
from drwatch.observe.canary import CanaryObserver
from drwatch.observe.discovery import discover
from drwatch.observe.fleetfile import FLEET_FILE, load_fleet, save_fleet
from drwatch.observe.images import ImageWatch
from drwatch.observe.provider import ProviderObserver
from drwatch.observe.regions import RegionWatch, learn_addresses
from drwatch.observe.samples import SampleHistory
from drwatch.observe.scheduler import CheckJob, CheckScheduler
from drwatch.observe.store import HealthStore, hysteresis_from
from drwatch.observe.volumes import VolumeWatch
from drwatch.plan.schedule import LiveDrillScheduler, run_scheduled
from drwatch.probes.http import HttpProbe, new_session
from drwatch.probes.tcp import TcpProbe
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import Inventory
from drwatch.providers.dns import Dns, NullDns
from drwatch.providers.route53 import Route53Dns
from drwatch.roles import RoleMemory
from drwatch.secretfile import read_secret
from drwatch.statelock import state_dir_lock
from drwatch.web import api, outlook, status
from drwatch.web import approvals as approvals_web
from drwatch.web import backups as backups_web
from drwatch.web import readiness as readiness_web
from drwatch.web import regions as regions_web
from drwatch.web.hostcheck import AllowedHosts, host_check
from drwatch.web.metrics import Metrics

EXIT_OK, EXIT_CONFIG = 0, 2
TICK_INTERVAL_S = 1.0
# Trends move over minutes: fit them (and read the drill ledger) this often, not every tick.
OUTLOOK_INTERVAL_S = 5.0
CHECK_CONCURRENCY = 256


def _log() -> Any:
    return logs.get_logger(component="daemon")


@dataclass
class Watch:
    """What the loops share: the current fleet and the health store. It is the
    `FleetView` the playbooks see (latest snapshot; refresh = rediscover now)."""

    cfg: Config
    provider: Inventory
    store: HealthStore
    scheduler: CheckScheduler
    job_sources: Sequence[Callable[[Fleet], dict[str, CheckJob]]]
    fleet: Fleet = field(default_factory=Fleet)
    discovered: asyncio.Event = field(default_factory=asyncio.Event)
    discovery_errors: dict[str, str] = field(default_factory=dict)
    # Where the last discovered fleet is kept across restarts (drwatch/observe/fleetfile.py).
    fleet_file: Path | None = None

    def latest(self) -> Snapshot:
        return self.store.snapshot(self.fleet, time.time())

    def snapshot(self, now: float) -> Snapshot:
        """The tick's snapshot: the health store's, with what discovery said (a watcher
        that finds nothing is blind, not healthy)."""
        seen = Discovery(
            MappingProxyType(dict(self.discovery_errors)), tuple(g.name for g in self.cfg.groups)
        )
        return replace(self.store.snapshot(self.fleet, now), discovery=seen)

    async def refresh(self) -> Snapshot:
        await self.rediscover()
        return self.latest()

    async def rediscover(self) -> None:
        result = await discover(
            self.provider, self.cfg.provider, self.cfg.groups, time.time(), previous=self.fleet
        )
        self._adopt(result.fleet)
        self._note_errors(dict(result.errors))

    def _note_errors(self, errors: dict[str, str]) -> None:
        """Log a region's discovery failing or recovering once, not every round."""
        for region in errors.keys() | self.discovery_errors.keys():
            reason = errors.get(region)
            if reason == self.discovery_errors.get(region):
                continue
            if reason is None:
                _log().info("discovery.region_recovered", region=region)
            else:
                _log().warning("discovery.region_failed", region=region, reason=reason)
        self.discovery_errors = errors

    def _adopt(self, fleet: Fleet) -> None:
        before = {i.id for i in self.fleet}
        after = {i.id for i in fleet}
        if before != after:
            _log().info(
                "fleet.changed",
                instances=len(fleet),
                joined=sorted(after - before),
                left=sorted(before - after),
            )
        if self.fleet_file is not None and fleet.instances != self.fleet.instances:
            save_fleet(self.fleet_file, fleet)
        self.fleet = fleet
        self.store.prune(fleet)
        jobs: dict[str, CheckJob] = {}
        for source in self.job_sources:
            jobs.update(source(fleet))
        self.scheduler.set_jobs(jobs)
        self.discovered.set()


class Daemon:
    """The running watcher. Built by `build()`, run by `run(stop)`."""

    def __init__(self, cfg: Config, stack: AsyncExitStack, secret: bytes, token: bytes | None):
        self.cfg = cfg
        self.stack = stack
        self.secret = secret
        self.token = token
        self.notifier: Notifier = notifier_from_env()
        self.summary_log = SummaryLog()
        self.impaired_since: float | None = None

    async def build(self) -> None:
        cfg = self.cfg
        timeouts = [cfg.timing.agent.timeout, cfg.timing.app.timeout, cfg.timing.canary.timeout]
        self.metrics = Metrics(max_check_timeout=max(timeouts))
        # Throttling retries must end inside one provider poll, or a throttled region would
        # read as a timeout and the observer's own backoff would never start.
        self.provider = AwsProvider(cfg.provider, throttle_budget=cfg.timing.provider.timeout / 2)
        self.stack.push_async_callback(self.provider.aclose)
        session = new_session(user_agent=f"drwatch/{__version__} ({cfg.watcher.name})")
        self.stack.push_async_callback(session.close)
        http, tcp = HttpProbe(session), TcpProbe()
        self.store = HealthStore(hysteresis_from(cfg.timing))
        self.scheduler = CheckScheduler(CHECK_CONCURRENCY, self.record)
        self.agent = AgentClient(cfg.agent, self.secret, session)
        sources: list[Callable[[Fleet], dict[str, CheckJob]]] = [
            AgentObserver(self.agent, cfg.timing.agent).jobs_for,
            AppObserver(cfg.groups, cfg.timing.app, http, tcp).jobs_for,
            CanaryObserver(cfg.canaries, cfg.timing.canary, http, tcp).jobs_for,
        ]
        kept = cfg.watcher.state_dir / FLEET_FILE
        self.watch = Watch(
            cfg,
            self.provider,
            self.store,
            self.scheduler,
            sources,
            fleet=load_fleet(kept),
            fleet_file=kept,
        )
        self.provider_observer = ProviderObserver(
            self.provider, cfg.provider.regions, timeout=cfg.timing.provider.timeout
        )
        self.incidents = IncidentStore(cfg.watcher.state_dir)
        # The tick's writes run in this writer's thread: an fsync never stalls the probes.
        self.incident_writer = IncidentWriter(self.incidents)
        self.stack.callback(self.incident_writer.close)
        # One memory of database roles, kept in the incident store, for the cycle's
        # decisions and the playbooks' own refusal to recover a replica as the primary.
        roles = RoleMemory(self.incidents)
        self.regions = self._region_watch()
        # With [cluster]: etcd's election, and the shared journal fenced by it.
        self.shared = build_cluster(cfg.cluster) if cfg.cluster else None
        if self.shared is not None:
            self.stack.push_async_callback(self.shared.close)
        # Backups before the runner: the database ladder reads their catalogue.
        deps = fleet_deps(cfg, lambda: self.watch.fleet, roles.role, self.agent, self.provider)
        self.backups = await start_backups(
            cfg, self.stack, self.metrics.registry, fleet=deps, shared=self.shared
        )
        # restore_from_dump: a step approved with `drwatch approve`, and the stream of a
        # dump into a new host (only when the watcher holds the private key).
        self.step_approvals = StepApprovals(self.incidents)
        dump_restore: DumpRestore | None = None
        if cfg.backup is not None and cfg.backup.watcher_private_key_file is not None:
            dump_restore = AgentDumpRestore(cfg.agent, self.secret, session, self.agent)
        self.runner = build_runner(
            cfg,
            self.provider,
            self.watch,
            self.agent,
            kill_switch=self._kill_switch,
            roles=roles,
            region=region_setup(cfg, self.regions.dns, self.regions.book),
            journal=self.shared.journal if self.shared else None,
            backups=self.backups.ladder if self.backups is not None else None,
            dump_restore=dump_restore,
            approvals=self.step_approvals,
        )
        self.stack.push_async_callback(self.runner.aclose)
        self.cycle = Cycle(
            cfg.policy,
            cfg.timing,
            self.incidents,
            self.runner,
            time.time(),
            roles=roles,
            rto=RtoPolicy.from_config(cfg.objectives, cfg.groups),
            regions=cfg.provider.regions,
        )
        controls = approvals_web.ApprovingControls(
            self._build_node(), self.step_approvals, self.incidents, self._not_leading
        )
        self.api_state = api.LiveApiState(
            watcher_name=cfg.watcher.name,
            dry_run=cfg.policy.dry_run,
            api_token=self.token,
            incidents=self.incidents,
            controls=controls,
            read_requires_token=cfg.watcher.api_read_requires_token,
        )
        self.samples = SampleHistory(cfg.trends.window, cfg.trends.max_samples)
        self.volumes = VolumeWatch(
            self.provider, cfg.provider.regions, timeout=cfg.timing.provider.timeout
        )
        self.images = ImageWatch(
            self.provider, cfg.provider.regions, timeout=cfg.timing.provider.timeout
        )
        self.readiness = readiness_web.ReadinessState()
        self.ledger = DrillLedger(cfg.watcher.state_dir)
        self.stack.callback(self.ledger.close)
        self.outlook = outlook.OutlookState(
            self.ledger, cfg.objectives.drill_interval, cfg.objectives.drill_kinds
        )
        self.live_drills = LiveDrillScheduler(list(cfg.plan.live_drills), self._live_drill)
        self.alerter = await self.stack.enter_async_context(
            Alerter.from_config(cfg.alerts, self.metrics)
        )
        await self._serve_web()

    def _region_watch(self) -> RegionWatch:
        """The public name's records (Route 53) and the serving region ([dns])."""
        dns: Dns = NullDns()
        if self.cfg.dns is not None:
            route53 = Route53Dns(endpoint=self.cfg.dns.endpoint, profile=self.cfg.provider.profile)
            self.stack.push_async_callback(route53.aclose)
            dns = route53
        zone, name = (
            (self.cfg.dns.hosted_zone, self.cfg.dns.public_name) if self.cfg.dns else ("", "")
        )
        return RegionWatch(dns, zone, name, list(self.cfg.provider.regions), AddressBook())

    async def _regions_loop(self) -> None:
        """Which region serves: the addresses of each region, then the records, as often
        as discovery."""
        await self.watch.discovered.wait()
        while True:
            try:
                snap = self.watch.latest()
                for region in self.cfg.provider.regions:
                    with suppress(ProviderError):
                        addresses = await self.provider.addresses(region)
                        learn_addresses(self.regions.book, snap, addresses)
                learn_addresses(self.regions.book, snap)
                await self.regions.read(snap, self.cycle.roles.known())
            except Exception:
                _log().exception("regions.failed")
            await asyncio.sleep(self.cfg.provider.discovery_interval)

    def _not_leading(self) -> str | None:
        """Why this watcher runs no playbook step (a follower's reason), None when it does."""
        return None if self.node.may_act() else self.node.not_acting()

    def _build_node(self) -> api.Controls:
        """Lead or follow (cluster.node): alone, always lead; the API's controls."""
        if self.shared is None or self.shared.incidents is None:
            self.node: Solo | ClusterNode = Solo()
            return self.cycle
        commands = SharedControls(self.cycle)
        retention = self.cfg.cluster.incident_retention if self.cfg.cluster else None
        mirror = IncidentMirror(self.incidents, self.shared.incidents, retention)
        self.node = ClusterNode(
            self.shared.leadership,
            self.cycle,
            self.runner,
            mirror=mirror,
            shared_controls=self.shared.controls,
            commands=commands,
            vantage=self._vantage(),
        )
        return commands

    def _vantage(self) -> Vantage | None:
        cfg, shared = self.cfg.cluster, self.shared
        if cfg is None or shared is None or shared.views is None:
            return None
        election = shared.leadership
        lease = (lambda: election.lease) if isinstance(election, Election) else (lambda: 0)
        # A view older than a lease says nothing of now: its watcher may be gone.
        return Vantage(cfg.name, shared.views, lease, cfg.quorum, cfg.lease_ttl)

    def _kill_switch(self) -> bool:
        """Checked by the runner right before a playbook's first side effect."""
        return self.cycle.paused or self.cfg.policy.dry_run or not self.node.may_act()

    def record(self, obs: Observation) -> None:
        self.store.record(obs)
        self.samples.record(obs)
        self.metrics.record_check(obs, obs.latency_s)

    async def _serve_web(self) -> None:
        app = web.Application(middlewares=[host_check(AllowedHosts.from_config(self.cfg))])
        api.add_routes(app, self.api_state)
        outlook.add_routes(app, self.outlook)
        readiness_web.add_routes(app, self.readiness)
        self.metrics.add_routes(app)
        status.add_routes(app)
        regions_web.add_routes(app, self.regions)
        api.add_status_hook(app, self._cluster_status)
        approvals_web.add_routes(app, self.step_approvals)
        if self.backups is not None:
            backups_web.add_routes(app, self.backups)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        host, port = split_host_port(self.cfg.watcher.listen)
        await web.TCPSite(runner, host, port).start()
        _log().info("web.listening", address=f"http://{self.cfg.watcher.listen}/")

    def _cluster_status(self, doc: dict[str, Any], _snapshot: Snapshot | None) -> None:
        cluster = self.node.status()
        if cluster is not None:
            doc["cluster"] = cluster

    async def run(self, stop: asyncio.Event) -> None:
        if self.shared is None:
            resumed = await self.runner.resume()
            if resumed:
                _log().info("runner.resumed", runs=resumed)
        # A clustered watcher resumes the shared journal's runs when it wins (cluster.node).
        async with asyncio.TaskGroup() as tg:
            loops = [
                *(
                    [tg.create_task(self.shared.leadership.run(), name="election")]
                    if self.shared
                    else []
                ),
                tg.create_task(self.scheduler.run(), name="scheduler"),
                tg.create_task(self._discovery_loop(), name="discovery"),
                tg.create_task(self._provider_loop(), name="provider"),
                tg.create_task(self._tick_loop(), name="tick"),
                tg.create_task(self._volume_loop(), name="volumes"),
                tg.create_task(self._outlook_loop(), name="outlook"),
                tg.create_task(self._regions_loop(), name="regions"),
            ]
            # Several watchers: backups run on the leader only (drwatch.backup.cluster).
            if self.backups is not None and self.backups.leader is not None:
                loops.append(tg.create_task(self.backups.leader.run(), name="backups"))
            await self._ready()
            self.live_drills.start()
            await stop.wait()
            self.notifier.stopping()
            self.live_drills.shutdown()
            for task in loops:
                task.cancel()

    async def _ready(self) -> None:
        """READY=1 once the first discovery ran (or failed), so systemd's start means watching."""
        with suppress(TimeoutError):
            async with asyncio.timeout(60):
                await self.watch.discovered.wait()
        self.notifier.ready()
        _log().info("daemon.ready", instances=len(self.watch.fleet))
        tune_gc()

    async def _discovery_loop(self) -> None:
        while True:
            try:
                await self.watch.rediscover()
            except Exception:  # the loop survives every error but a fatal one
                _log().exception("discovery.failed")
                self.watch.discovered.set()
            await asyncio.sleep(self.cfg.provider.discovery_interval)

    async def _provider_loop(self) -> None:
        await self.watch.discovered.wait()
        regions = self.cfg.provider.regions
        while True:
            for obs in await self.provider_observer.poll_all(self.watch.fleet, time.time()):
                self.record(obs)
            backoff = max(self.provider_observer.next_poll_delay(r) for r in regions)
            await asyncio.sleep(max(self.cfg.timing.provider.interval, backoff))

    async def _volume_loop(self) -> None:
        """Volume health from the provider, as often as discovery."""
        await self.watch.discovered.wait()
        while True:
            try:
                await self.volumes.poll()
            except Exception:
                _log().exception("volumes.failed")
            try:
                await self.images.poll(time.time())
            except Exception:
                _log().exception("images.failed")
            await asyncio.sleep(self.cfg.provider.discovery_interval)

    async def _tick_loop(self) -> None:
        await self.watch.discovered.wait()
        watchdog = watchdog_interval()
        interval = min(TICK_INTERVAL_S, watchdog / 2) if watchdog else TICK_INTERVAL_S
        while True:
            started = time.monotonic()
            try:
                acting = await self.node.prepare(time.time())
                await self.tick(time.time(), acting=acting)
                await self.node.settle(time.time())
            except TickNotSharedError as exc:  # [cluster]: deposed or etcd away; no plan after it
                _log().warning("tick.not_shared", reason=str(exc))
                self.notifier.watchdog()
            except Exception:
                _log().exception("tick.failed")
            else:
                # A watchdog ping only from a tick that completed: a stuck loop gets restarted.
                self.notifier.watchdog()
            self.metrics.record_tick(time.monotonic() - started, time.time())
            await asyncio.sleep(interval)

    async def tick(self, now: float, *, acting: bool = True) -> TickReport:
        # Several watchers: this watcher's silence, weighed against the others' views.
        snapshot = self.node.corroborate(self.watch.snapshot(now), now)
        if acting:
            # With [cluster], the tick's writes reach etcd (fenced) before the local copy.
            write = self.node.write_through(self.incident_writer.write)
            report = await self.cycle.run_tick(snapshot, now, write)
        else:  # another watcher leads, or nobody may: observe and report, decide nothing
            report = follower_report(self.cycle, snapshot, now, self.node.not_acting())
        self.api_state.update(report, snapshot)
        if self.summary_log(report):
            self.notifier.status(report.summary)
        self.metrics.update_from_snapshot(snapshot)
        self.metrics.update_from_report(report)
        # Set on every tick: update_from_report resets the warning counts it does not own.
        self.metrics.update_trends(self.outlook.trends)
        lag = self.scheduler.lag_stats()
        self.metrics.set_scheduler_lag(lag.p99, lag.max)
        # Runs of open incidents, and of those this tick closed: the tick that ends an
        # incident as recovered is the one that sees its run finished.
        touched = {inc.id for inc in report.open_incidents}
        touched.update(change.incident_id for change in report.changes)
        for incident_id in sorted(touched):
            progress = self.runner.progress(incident_id)
            if progress is not None:
                self.metrics.record_run(progress)
        self.alerter.update(self._alerts(report, now), now)
        return report

    def status_doc(self) -> dict[str, Any]:
        """The status document as GET /api/v1/status serves it (for scheduled drills)."""
        doc = api.status_doc(self.api_state)
        names = {i.id: i.name for i in self.watch.fleet}
        outlook.extend_status(doc, self.outlook, names)
        self._cluster_status(doc, None)
        return doc

    async def _live_drill(self, spec: Any) -> None:
        """A scheduled live drill (drwatch.plan.schedule): guarded, measured, recorded."""
        token = self.token.decode() if self.token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                await run_scheduled(
                    self.cfg,
                    spec,
                    status=self.status_doc,
                    api_url=f"http://{self.cfg.watcher.listen}",
                    provider=self.provider,
                    session=session,
                )
        except Exception:  # the daemon survives a drill that breaks
            _log().exception("live_drill.failed", scenario=str(spec.scenario))

    async def refresh_outlook(self, now: float) -> None:
        """Early warnings from the agents' recent samples and the provider's volumes,
        beside the cycle (warnings only: they open no incident), and the drill ledger.
        The fits run in a worker thread over frozen copies: at 10,000 instances a pass
        takes about a second of CPU, which must not stall the event loop."""
        self.samples.prune(self.watch.fleet)
        self.outlook.trends = await asyncio.to_thread(
            assess_trends,
            self.watch.fleet,
            self.samples.view(now),
            now,
            self.cfg.trends,
            volumes=self.volumes.current(),
        )
        self.metrics.update_drills(
            self.ledger.latest(),
            self.cfg.objectives.drill_interval,
            self.cfg.objectives.drill_kinds,
        )
        self.refresh_readiness(now)

    def refresh_readiness(self, now: float) -> None:
        """Readiness warnings beside the tick (drwatch.assess.readiness, pure); none while
        drwatch doubts its own network, as for the tick's findings."""
        snapshot, report = self.watch.latest(), self.api_state.latest_report()
        known = self.cycle.roles.known()
        dns = self.regions.latest  # the public name's records, as last read
        regions = serving_regions(
            snapshot,
            known,
            self.cfg.provider.regions,
            records=dns.records,
            address_regions=self.regions.book.regions,
            dns_error=dns.dns_error,
        )
        if report is None or report.watcher_state is WatcherState.IMPAIRED:
            self.readiness.report = ReadinessReport((), regions)
        else:
            self.readiness.report = assess_readiness(
                ReadinessInput(snapshot, now, self.cycle.rules, regions,
                               ReadinessConfig.from_config(self.cfg), self.images.current(),
                               known, self.incidents.retired())
            )  # fmt: skip
        findings = report.findings if report is not None else ()
        lost = {d.region for d in findings if d.finding is Finding.DR_CAPACITY_LOST}
        fallback, _ = regional_fallback(regions, lost)
        self.metrics.update_readiness(self.readiness.report.diagnoses, fallback)

    async def _outlook_loop(self) -> None:
        await self.watch.discovered.wait()
        while True:
            try:
                await self.refresh_outlook(time.time())
            except Exception:
                _log().exception("outlook.failed")
            await asyncio.sleep(OUTLOOK_INTERVAL_S)

    def _alerts(self, report: TickReport, now: float) -> list[AlertInput]:
        alerts = [alert_for_incident(inc) for inc in report.open_incidents]
        alerts += [rto_alert(o.incident, o.reason) for o in report.rto_overdue]
        alerts.extend(self.node.alerts(now))
        if report.watcher_state is WatcherState.IMPAIRED:
            self.impaired_since = self.impaired_since or now
            alerts.append(
                watcher_impaired_alert(
                    self.cfg.watcher.name,
                    report.summary,
                    self.impaired_since,
                    reason=report.watcher_reason,
                )
            )
        else:
            self.impaired_since = None
        if self.backups is not None:
            alerts += backup_alerts(self.backups.findings(now), now)
        return alerts


def tune_gc() -> None:
    """Move what start-up built (config, fleet, connection state) out of the collector's
    way, and collect the young generation less often. Full passes over ~340,000 long-lived
    objects were the whole schedule-lag tail at 10,000 targets (bench/README.md); none of
    them were garbage."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _secrets(cfg: Config) -> tuple[bytes, bytes | None]:
    secret = read_secret(cfg.agent.secret_file)
    token_file = cfg.watcher.api_token_file
    return secret, (read_secret(token_file) if token_file else None)


async def run_daemon(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; then cancel every task and return the exit code."""
    logs.configure(cfg.watcher.log_format.value, cfg.watcher.log_level)
    with ExitStack() as held:
        try:
            secret, token = _secrets(cfg)
            client_tls_context(cfg.agent)  # a CA file that does not load is a config error
            cfg.watcher.state_dir.mkdir(parents=True, exist_ok=True)
            # One daemon per state directory, held until this function returns.
            held.enter_context(state_dir_lock(cfg.watcher.state_dir))
        except (ConfigError, OSError) as err:
            problems = err.problems if isinstance(err, ConfigError) else [str(err)]
            for problem in problems:
                print(f"drwatch: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        return await _run_locked(cfg, secret, token)


async def _run_locked(cfg: Config, secret: bytes, token: bytes | None) -> int:
    log = _log().bind(watcher=cfg.watcher.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("daemon.start", version=__version__, state_dir=str(cfg.watcher.state_dir))
    async with AsyncExitStack() as stack:
        daemon = Daemon(cfg, stack, secret, token)
        try:
            await daemon.build()
        except ConfigError as err:  # a problem only the start shows (a backup key, ...)
            for problem in err.problems:
                print(f"drwatch: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        await daemon.run(stop)
    log.info("daemon.stop")
    return EXIT_OK
