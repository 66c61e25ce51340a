"""The watcher's own loop: scheduler lag, tick time and freshness, whether it is impaired
or paused, and the incidents past their recovery time objective."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

from drwatch.model import Scope
from drwatch.web.metrics.shapes import ReportLike

_TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopSeries:
    """`drwatch_scheduler_lag_*`, `drwatch_tick_duration_seconds`,
    `drwatch_last_tick_timestamp_seconds`, `drwatch_watcher_impaired`,
    `drwatch_incidents_past_rto` and `drwatch_paused`."""

    def __init__(self, r: CollectorRegistry) -> None:
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
        self._build_state(r)

    def _build_state(self, r: CollectorRegistry) -> None:
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

    def update_from_report(self, report: ReportLike) -> None:
        """Impaired, paused, and the incidents past their RTO by scope (0 for the rest)."""
        self.set_watcher_impaired(report.watcher_state == "impaired")
        self.set_paused(report.paused)
        past: dict[Scope, int] = {}
        for overdue in report.rto_overdue:
            past[overdue.incident.scope] = past.get(overdue.incident.scope, 0) + 1
        for scope in Scope:
            self.incidents_past_rto.labels(scope.value).set(past.get(scope, 0))

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
