"""Prometheus metrics: one `Metrics` object owning its own registry (no global state).

The daemon calls small methods from its loops (`record_check`, `update_from_snapshot`,
`record_run`, ...) with model types or plain values; `add_routes(app)` serves the
exposition at `/metrics`. Names follow Prometheus conventions: `drwatch_` prefix,
base units, counters end in `_total`, label values are bounded (instance names, zone
names, enum values; never URLs or error strings). docs/metrics.md lists every series.

The series are defined by subsystem, each with what updates it: `checks`, `incidents`
(and warnings), `playbooks`, `loop` (the watcher's own), `alerts`; the per-target series
(`targets`) and the outlook (`outlook`: trends and drills) are collectors replaced whole.
`Metrics` registers them in one registry and is what the rest of drwatch calls.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Mapping

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from drwatch import __version__
from drwatch.model import Observation, RunProgress, Scope, Snapshot
from drwatch.web.metrics.alerts import AlertSeries
from drwatch.web.metrics.checks import CheckSeries, check_buckets
from drwatch.web.metrics.incidents import TREND_FINDINGS, IncidentSeries
from drwatch.web.metrics.loop import LoopSeries
from drwatch.web.metrics.outlook import DEFAULT_DRILL_INTERVAL_S, OutlookCollector
from drwatch.web.metrics.playbooks import PlaybookSeries
from drwatch.web.metrics.shapes import DiagnosisLike, ReportLike, TrendsLike
from drwatch.web.metrics.targets import SnapshotCollector

__all__ = [
    "DEFAULT_DRILL_INTERVAL_S",
    "TREND_FINDINGS",
    "Metrics",
    "ReportLike",
    "TrendsLike",
    "check_buckets",
]


class Metrics:
    """Every drwatch series, in a registry of its own."""

    def __init__(self, *, max_check_timeout: float = 5.0, process_metrics: bool = True) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._snapshot = SnapshotCollector()
        r.register(self._snapshot)
        self._outlook = OutlookCollector()
        r.register(self._outlook)
        Info("drwatch_build", "drwatch's version and Python runtime.", registry=r).info(
            {"version": __version__, "python": platform.python_version(), "platform": sys.platform}
        )
        # Registered in this order, which is the exposition's.
        self.checks = CheckSeries(r, max_check_timeout)
        self.incidents = IncidentSeries(r)
        self.playbooks = PlaybookSeries(r)
        self.loop = LoopSeries(r)
        self.alerts = AlertSeries(r)

    # -- what the daemon calls ---------------------------------------------------------

    def record_check(self, obs: Observation, duration: float | None = None) -> None:
        """Count one finished check; `duration` defaults to the observation's latency."""
        self.checks.record(obs, duration)

    def update_from_snapshot(self, snapshot: Snapshot) -> None:
        """Replace every per-target series with the snapshot's debounced health."""
        self._snapshot.update(snapshot)

    def update_from_report(self, report: ReportLike) -> None:
        """Incidents open and opened by scope, watcher impaired and paused, from one tick."""
        self.incidents.update_from_report(report)
        self.loop.update_from_report(report)

    def update_readiness(self, diagnoses: Iterable[DiagnosisLike], fallback: bool) -> None:
        """The readiness warnings' counts and whether a regional fallback exists (call
        after update_from_report, which counts only the cycle's own findings)."""
        self.incidents.update_readiness(diagnoses, fallback)

    def update_trends(self, trends: TrendsLike) -> None:
        """Disk fits, pressure runs, and the trend warnings' counts (call after
        update_from_report, which counts only the cycle's own findings)."""
        self._outlook.set_trends(trends)
        self.incidents.set_warnings(TREND_FINDINGS, trends.diagnoses)

    def update_drills(
        self, latest: Mapping[tuple[str, str], float], interval: float, required: Iterable[str]
    ) -> None:
        """The ledger's newest drill per (kind, result), and the interval they are due in."""
        self._outlook.set_drills(latest, interval, required)

    def set_incidents_active(self, by_scope: Mapping[Scope, int]) -> None:
        """Open incidents per scope; scopes not named are set to 0."""
        self.incidents.set_active(by_scope)

    def incident_opened(self, scope: Scope) -> None:
        self.incidents.opened(scope)

    def record_run(self, progress: RunProgress) -> None:
        """Count a finished run once (repeated reports of it are ignored); running runs wait."""
        self.playbooks.record_run(progress)

    def set_scheduler_lag(self, p99_s: float, max_s: float) -> None:
        self.loop.set_scheduler_lag(p99_s, max_s)

    def record_tick(self, duration_s: float, finished_at: float) -> None:
        self.loop.record_tick(duration_s, finished_at)

    def set_watcher_impaired(self, impaired: bool) -> None:
        self.loop.set_watcher_impaired(impaired)

    def set_paused(self, paused: bool) -> None:
        self.loop.set_paused(paused)

    def alert_delivered(self, receiver: str) -> None:
        self.alerts.deliveries.labels(receiver).inc()

    def alert_failed(self, receiver: str) -> None:
        self.alerts.failures.labels(receiver).inc()

    def alert_dropped_batch(self, receiver: str) -> None:
        self.alerts.dropped.labels(receiver).inc()

    def exposition(self) -> bytes:
        """The text exposition, as /metrics serves it (for tests and `promtool`)."""
        return generate_latest(self.registry)

    def add_routes(self, app: web.Application) -> None:
        """Serve the registry at GET /metrics (content negotiation by prometheus_client)."""
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
