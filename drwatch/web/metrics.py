"""Prometheus metrics: one `Metrics` object owning its own registry (no global state).

The daemon calls small methods from its loops (`record_check`, `update_from_snapshot`,
`record_run`, ...) with model types or plain values; `add_routes(app)` serves the
exposition at `/metrics`. Names follow Prometheus conventions: `drwatch_` prefix,
base units, counters end in `_total`, label values are bounded (instance names, zone
names, enum values; never URLs or error strings). docs/metrics.md lists every series.
"""

from __future__ import annotations

import platform
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch import __version__
from drwatch.model import (
    Fleet,
    Health,
    Layer,
    Observation,
    RunOutcome,
    RunProgress,
    Scope,
    Snapshot,
    StepStatus,
    TargetHealth,
)
from drwatch.model.findings import Finding, Severity


class _ChangeLike(Protocol):
    @property
    def scope_key(self) -> str: ...
    @property
    def change(self) -> str: ...


class _IncidentLike(Protocol):
    @property
    def scope(self) -> Scope: ...


class _DiagnosisLike(Protocol):
    @property
    def finding(self) -> Finding: ...
    @property
    def severity(self) -> Severity: ...


class _OverdueLike(Protocol):
    @property
    def incident(self) -> _IncidentLike: ...


class ReportLike(Protocol):
    """What metrics read of the cycle's TickReport (structural: web does not import cycle)."""

    @property
    def watcher_state(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def open_incidents(self) -> Sequence[_IncidentLike]: ...
    @property
    def changes(self) -> Sequence[_ChangeLike]: ...
    @property
    def findings(self) -> Sequence[_DiagnosisLike]: ...
    @property
    def rto_overdue(self) -> Sequence[_OverdueLike]: ...


DEFAULT_DRILL_INTERVAL_S = 182 * 86400.0
# Found beside the cycle (drwatch.assess.trends), counted by update_trends.
TREND_FINDINGS = (
    Finding.DISK_FULL_SOON,
    Finding.CPU_PRESSURE,
    Finding.MEMORY_PRESSURE,
    Finding.VOLUME_IMPAIRED,
)
# Every finding that is a warning, exported at 0 from start-up so alert rules see it.
_WARNING_FINDINGS = tuple(f for f in Finding if f.severity is Severity.WARNING)
_CYCLE_WARNINGS = tuple(f for f in _WARNING_FINDINGS if f not in TREND_FINDINGS)


class _DiskTrendLike(Protocol):
    @property
    def instance(self) -> str: ...
    @property
    def mount(self) -> str: ...
    @property
    def rate_bytes_per_s(self) -> float: ...
    @property
    def eta_s(self) -> float | None: ...


class _PressureLike(Protocol):
    @property
    def instance(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def lasted_s(self) -> float: ...


class TrendsLike(Protocol):
    """What metrics read of drwatch.assess.trends.TrendReport."""

    @property
    def diagnoses(self) -> Sequence[_DiagnosisLike]: ...
    @property
    def disks(self) -> Sequence[_DiskTrendLike]: ...
    @property
    def pressure(self) -> Sequence[_PressureLike]: ...


# Latency buckets for checks, cut at the longest configured timeout (a check cannot
# take longer), so every bucket says something.
_CHECK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Playbooks wait on the cloud: seconds to tens of minutes.
_PLAYBOOK_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
_STEP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Runs already counted, so a run reported on every tick is counted once.
_SEEN_RUNS_MAX = 4096
_INSTANCE_LAYERS = (Layer.PROVIDER, Layer.AGENT, Layer.APP)
_SCOPES = frozenset(s.value for s in Scope)


def check_buckets(max_timeout: float) -> tuple[float, ...]:
    """Histogram buckets up to `max_timeout` seconds, which is always the last finite bucket."""
    below = tuple(b for b in _CHECK_BUCKETS if b < max_timeout)
    return (*below, float(max_timeout))


@dataclass(frozen=True, slots=True)
class _TargetRow:
    layer: str
    role: str
    region: str
    zone: str
    target: str
    up: bool


class _SnapshotCollector(Collector):
    """Per-target series derived from the latest snapshot, replaced whole on each update.

    A collector rather than labelled gauges: targets that left the fleet vanish
    from the exposition at once, without bookkeeping of which label sets to remove.
    """

    def __init__(self) -> None:
        self._rows: tuple[_TargetRow, ...] = ()
        self._counts: Mapping[tuple[str, str], int] = {}
        self._canaries: Mapping[str, bool] = {}

    def replace(
        self,
        rows: tuple[_TargetRow, ...],
        counts: Mapping[tuple[str, str], int],
        canaries: Mapping[str, bool],
    ) -> None:
        self._rows, self._counts, self._canaries = rows, counts, canaries

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "drwatch_target_up",
            "1 if the target is healthy on this layer after hysteresis, 0 if down; "
            "targets whose health is unknown are absent (see drwatch_targets).",
            labels=["layer", "role", "region", "zone", "target"],
        )
        for r in self._rows:
            up.add_metric([r.layer, r.role, r.region, r.zone, r.target], 1.0 if r.up else 0.0)
        targets = GaugeMetricFamily(
            "drwatch_targets",
            "Targets by layer and debounced health (up, down, unknown).",
            labels=["layer", "health"],
        )
        for (layer, health), n in sorted(self._counts.items()):
            targets.add_metric([layer, health], float(n))
        canary = GaugeMetricFamily(
            "drwatch_canary_up",
            "1 if the canary outside every watched cloud answers, 0 if not, absent if unknown.",
            labels=["canary"],
        )
        for name, ok in sorted(self._canaries.items()):
            canary.add_metric([name], 1.0 if ok else 0.0)
        yield from (up, targets, canary)

    def describe(self) -> Iterable[Metric]:
        # Describing nothing keeps the registry from calling collect() at registration.
        return ()


class _OutlookCollector(Collector):
    """Early warnings (disk fits, pressure runs) and the drill ledger's newest drills,
    replaced whole on each refresh: a disk that stops growing loses its ETA series."""

    def __init__(self) -> None:
        self._disks: tuple[tuple[str, str, float, float | None], ...] = ()
        self._pressure: tuple[tuple[str, str, float], ...] = ()
        self._drills: Mapping[tuple[str, str], float] = {}
        self._interval = DEFAULT_DRILL_INTERVAL_S
        self._required: tuple[str, ...] = ()

    def set_trends(
        self,
        disks: Iterable[tuple[str, str, float, float | None]],
        pressure: Iterable[tuple[str, str, float]],
    ) -> None:
        self._disks, self._pressure = tuple(disks), tuple(pressure)

    def set_drills(
        self, latest: Mapping[tuple[str, str], float], interval: float, required: Iterable[str]
    ) -> None:
        self._drills, self._interval, self._required = dict(latest), interval, tuple(required)

    def collect(self) -> Iterable[Metric]:
        yield from self._collect_trends()
        yield from self._collect_drills()

    def _collect_trends(self) -> Iterable[Metric]:
        eta = GaugeMetricFamily(
            "drwatch_disk_full_eta_seconds",
            "Estimated seconds until the disk is full, from a robust fit of its recent use; "
            "absent while the disk is not growing or the samples are too few.",
            labels=["instance", "mount"],
        )
        rate = GaugeMetricFamily(
            "drwatch_disk_growth_bytes_per_second",
            "The fitted growth of the disk's used bytes (negative: shrinking).",
            labels=["instance", "mount"],
        )
        for instance, mount, growth, seconds in self._disks:
            rate.add_metric([instance, mount], growth)
            if seconds is not None:
                eta.add_metric([instance, mount], seconds)
        pressure = GaugeMetricFamily(
            "drwatch_pressure_seconds",
            "How long CPU or memory use has stayed at or above its trends threshold (0: not now).",
            labels=["instance", "resource"],
        )
        for instance, resource, lasted in self._pressure:
            pressure.add_metric([instance, resource], lasted)
        yield from (eta, rate, pressure)

    def _collect_drills(self) -> Iterable[Metric]:
        last = GaugeMetricFamily(
            "drwatch_last_drill_timestamp_seconds",
            "When the newest drill of this kind with this result started (Unix time); "
            "0 for a required kind that has never passed.",
            labels=["kind", "result"],
        )
        rows = dict(self._drills)
        for kind in self._required:
            rows.setdefault((kind, "passed"), 0.0)
        for (kind, result), ts in sorted(rows.items()):
            last.add_metric([kind, result], ts)
        yield last
        yield GaugeMetricFamily(
            "drwatch_drill_interval_seconds",
            "objectives.drill_interval: a passing drill of each required kind is due "
            "this long after the last.",
            value=self._interval,
        )

    def describe(self) -> Iterable[Metric]:
        return ()


def _row(th: TargetHealth, fleet: Fleet) -> _TargetRow | None:
    if th.health is Health.UNKNOWN or th.layer is Layer.CANARY:
        return None
    layer, up = th.layer.value, th.health is Health.UP
    if th.layer in _INSTANCE_LAYERS:
        inst = fleet.get(th.target)
        if inst is None:
            return None
        # The instance's name, not its id: names survive replacement and read well.
        return _TargetRow(layer, inst.role.value, inst.region, inst.zone, inst.name, up)
    if th.layer is Layer.ZONE:
        region = next((i.region for i in fleet.in_zone(th.target)), "")
        return _TargetRow(layer, "", region, th.target, th.target, up)
    if th.layer is Layer.API:
        return _TargetRow(layer, "", th.target, "", th.target, up)
    group = fleet.in_group(th.target)
    role = group[0].role.value if group else ""
    region = group[0].region if group else ""
    return _TargetRow(layer, role, region, "", th.target, up)


class Metrics:
    """Every drwatch series, in a registry of its own."""

    def __init__(self, *, max_check_timeout: float = 5.0, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)
        self._outlook = _OutlookCollector()
        self.registry.register(self._outlook)
        self._seen_runs: OrderedDict[str, None] = OrderedDict()
        self._build(max_check_timeout)

    def _build(self, max_check_timeout: float) -> None:
        r = self.registry
        Info("drwatch_build", "drwatch's version and Python runtime.", registry=r).info(
            {"version": __version__, "python": platform.python_version(), "platform": sys.platform}
        )
        self.checks = Counter(
            "drwatch_checks_total",
            "Checks run, by layer and raw result (up, down, unknown).",
            ["layer", "result"],
            registry=r,
        )
        self.check_duration = Histogram(
            "drwatch_check_duration_seconds",
            "How long a check took, by layer.",
            ["layer"],
            buckets=check_buckets(max_check_timeout),
            registry=r,
        )
        self._build_incidents()
        self._build_playbooks()
        self._build_loop()
        self._build_alerts()

    def _build_incidents(self) -> None:
        r = self.registry
        self.incidents_active = Gauge(
            "drwatch_incidents_active",
            "Open incidents, by scope.",
            ["scope"],
            registry=r,
        )
        self.incidents_opened = Counter(
            "drwatch_incidents_opened_total", "Incidents opened, by scope.", ["scope"], registry=r
        )
        for scope in Scope:
            self.incidents_active.labels(scope.value).set(0)
            self.incidents_opened.labels(scope.value)
        self.warnings = Gauge(
            "drwatch_warnings",
            "Warning findings in the latest assessment (they open no incident), by finding.",
            ["finding"],
            registry=r,
        )
        for finding in _WARNING_FINDINGS:
            self.warnings.labels(finding.value).set(0)

    def _build_playbooks(self) -> None:
        r = self.registry
        self.playbook_runs = Counter(
            "drwatch_playbook_runs_total",
            "Finished playbook runs, by playbook and outcome (succeeded, failed).",
            ["playbook", "outcome"],
            registry=r,
        )
        self.playbook_duration = Histogram(
            "drwatch_playbook_duration_seconds",
            "Wall time of finished playbook runs, by playbook.",
            ["playbook"],
            buckets=_PLAYBOOK_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "drwatch_playbook_step_duration_seconds",
            "Wall time of finished playbook steps, by playbook, step and status.",
            ["playbook", "step", "status"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )

    def _build_loop(self) -> None:
        r = self.registry
        self.scheduler_lag_p99 = Gauge(
            "drwatch_scheduler_lag_p99_seconds",
            "99th percentile of how late checks started against their schedule, recent window.",
            registry=r,
        )
        self.scheduler_lag_max = Gauge(
            "drwatch_scheduler_lag_max_seconds",
            "Largest check start delay against its schedule, recent window.",
            registry=r,
        )
        self.tick_duration = Histogram(
            "drwatch_tick_duration_seconds",
            "How long one assess/decide tick took.",
            buckets=_TICK_BUCKETS,
            registry=r,
        )
        self.last_tick = Gauge(
            "drwatch_last_tick_timestamp_seconds",
            "When the last tick finished (Unix time); a stale value means a stuck loop.",
            registry=r,
        )
        self.watcher_impaired = Gauge(
            "drwatch_watcher_impaired",
            "1 when drwatch doubts its own network (its canaries fail) and will not act.",
            registry=r,
        )
        self.incidents_past_rto = Gauge(
            "drwatch_incidents_past_rto",
            "Open incidents, not recovered, past their recovery time objective, by scope.",
            ["scope"],
            registry=r,
        )
        self.paused = Gauge(
            "drwatch_paused",
            "1 when actions are paused (kill switch or configuration), 0 otherwise.",
            registry=r,
        )

    def _build_alerts(self) -> None:
        r = self.registry
        self.alert_deliveries = Counter(
            "drwatch_alert_deliveries_total",
            "Alert batches delivered, by receiver.",
            ["receiver"],
            registry=r,
        )
        self.alert_failures = Counter(
            "drwatch_alert_delivery_failures_total",
            "Failed alert delivery attempts (each retry counts), by receiver.",
            ["receiver"],
            registry=r,
        )
        self.alert_dropped = Counter(
            "drwatch_alert_dropped_total",
            "Alert batches dropped because the receiver's queue was full, by receiver.",
            ["receiver"],
            registry=r,
        )

    # -- what the daemon calls ---------------------------------------------------------

    def record_check(self, obs: Observation, duration: float | None = None) -> None:
        """Count one finished check; `duration` defaults to the observation's latency."""
        self.checks.labels(obs.layer.value, obs.health.value).inc()
        took = obs.latency_s if duration is None else duration
        if took is not None:
            self.check_duration.labels(obs.layer.value).observe(took)

    def update_from_snapshot(self, snapshot: Snapshot) -> None:
        """Replace every per-target series with the snapshot's debounced health."""
        rows = tuple(r for th in snapshot.health.values() if (r := _row(th, snapshot.fleet)))
        counts: dict[tuple[str, str], int] = {}
        for th in snapshot.health.values():
            key = (th.layer.value, th.health.value)
            counts[key] = counts.get(key, 0) + 1
        canaries = {
            th.target: th.health is Health.UP
            for th in snapshot.layer(Layer.CANARY)
            if th.health is not Health.UNKNOWN
        }
        self._snapshot.replace(rows, counts, canaries)

    def update_from_report(self, report: ReportLike) -> None:
        """Incidents open and opened by scope, watcher impaired and paused, from one tick."""
        by_scope: dict[Scope, int] = {}
        for inc in report.open_incidents:
            by_scope[inc.scope] = by_scope.get(inc.scope, 0) + 1
        self.set_incidents_active(by_scope)
        for change in report.changes:
            scope = change.scope_key.partition(":")[0]
            if change.change == "opened" and scope in _SCOPES:
                self.incident_opened(Scope(scope))
        self.set_watcher_impaired(report.watcher_state == "impaired")
        self.set_paused(report.paused)
        past: dict[Scope, int] = {}
        for overdue in report.rto_overdue:
            past[overdue.incident.scope] = past.get(overdue.incident.scope, 0) + 1
        for scope in Scope:
            self.incidents_past_rto.labels(scope.value).set(past.get(scope, 0))
        warnings = dict.fromkeys(_CYCLE_WARNINGS, 0)
        for d in report.findings:
            if d.severity is Severity.WARNING:
                warnings[d.finding] = warnings.get(d.finding, 0) + 1
        for finding, count in warnings.items():
            self.warnings.labels(finding.value).set(count)

    def update_trends(self, trends: TrendsLike) -> None:
        """Disk fits, pressure runs, and the trend warnings' counts (call after
        update_from_report, which counts only the cycle's own findings)."""
        self._outlook.set_trends(
            ((t.instance, t.mount, t.rate_bytes_per_s, t.eta_s) for t in trends.disks),
            ((p.instance, p.resource, p.lasted_s) for p in trends.pressure),
        )
        counts = dict.fromkeys(TREND_FINDINGS, 0)
        for d in trends.diagnoses:
            counts[d.finding] = counts.get(d.finding, 0) + 1
        for finding, count in counts.items():
            self.warnings.labels(finding.value).set(count)

    def update_drills(
        self, latest: Mapping[tuple[str, str], float], interval: float, required: Iterable[str]
    ) -> None:
        """The ledger's newest drill per (kind, result), and the interval they are due in."""
        self._outlook.set_drills(latest, interval, required)

    def set_incidents_active(self, by_scope: Mapping[Scope, int]) -> None:
        """Open incidents per scope; scopes not named are set to 0."""
        for scope in Scope:
            self.incidents_active.labels(scope.value).set(by_scope.get(scope, 0))

    def incident_opened(self, scope: Scope) -> None:
        self.incidents_opened.labels(scope.value).inc()

    def record_run(self, progress: RunProgress) -> None:
        """Count a finished run once (repeated reports of it are ignored); running runs wait."""
        if progress.outcome is RunOutcome.RUNNING or progress.run_id in self._seen_runs:
            return
        self._seen_runs[progress.run_id] = None
        while len(self._seen_runs) > _SEEN_RUNS_MAX:
            self._seen_runs.popitem(last=False)
        playbook = progress.playbook.value
        self.playbook_runs.labels(playbook, progress.outcome.value).inc()
        if progress.ended_at is not None and progress.started_at:
            self.playbook_duration.labels(playbook).observe(
                max(0.0, progress.ended_at - progress.started_at)
            )
        for name, status, took in _finished_steps(progress):
            self.step_duration.labels(playbook, name, status).observe(took)

    def set_scheduler_lag(self, p99_s: float, max_s: float) -> None:
        self.scheduler_lag_p99.set(p99_s)
        self.scheduler_lag_max.set(max_s)

    def record_tick(self, duration_s: float, finished_at: float) -> None:
        self.tick_duration.observe(duration_s)
        self.last_tick.set(finished_at)

    def set_watcher_impaired(self, impaired: bool) -> None:
        self.watcher_impaired.set(1 if impaired else 0)

    def set_paused(self, paused: bool) -> None:
        self.paused.set(1 if paused else 0)

    def alert_delivered(self, receiver: str) -> None:
        self.alert_deliveries.labels(receiver).inc()

    def alert_failed(self, receiver: str) -> None:
        self.alert_failures.labels(receiver).inc()

    def alert_dropped_batch(self, receiver: str) -> None:
        self.alert_dropped.labels(receiver).inc()

    def exposition(self) -> bytes:
        """The text exposition, as /metrics serves it (for tests and `promtool`)."""
        return generate_latest(self.registry)

    def add_routes(self, app: web.Application) -> None:
        """Serve the registry at GET /metrics (content negotiation by prometheus_client)."""
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))


def _finished_steps(progress: RunProgress) -> Iterator[tuple[str, str, float]]:
    for step in progress.steps:
        if step.started_at is None or step.ended_at is None:
            continue
        if step.status in (StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED):
            yield step.name, step.status.value, max(0.0, step.ended_at - step.started_at)
