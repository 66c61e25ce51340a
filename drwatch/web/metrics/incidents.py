"""Incidents and warnings: open and opened by scope, warning findings by finding (each
counted by whoever finds it: the cycle, readiness or trends), the regional fallback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from drwatch.model import Scope
from drwatch.model.findings import READINESS_FINDINGS, Finding, Severity
from drwatch.web.metrics.shapes import ChangeLike, DiagnosisLike, ReportLike

# Found beside the cycle (drwatch.assess.trends), counted by update_trends.
TREND_FINDINGS = (
    Finding.DISK_FULL_SOON,
    Finding.CPU_PRESSURE,
    Finding.MEMORY_PRESSURE,
    Finding.VOLUME_IMPAIRED,
)
# Every finding that is a warning, exported at 0 from start-up so alert rules see it.
_WARNING_FINDINGS = tuple(f for f in Finding if f.severity is Severity.WARNING)
# Found beside the cycle too (drwatch.assess.readiness), counted by update_readiness.
_CYCLE_WARNINGS = tuple(
    f for f in _WARNING_FINDINGS if f not in TREND_FINDINGS and f not in READINESS_FINDINGS
)
_SCOPES = frozenset(s.value for s in Scope)


class IncidentSeries:
    """`drwatch_incidents_active`, `drwatch_incidents_opened_total`, `drwatch_warnings`
    and `drwatch_regional_fallback`."""

    def __init__(self, r: CollectorRegistry) -> None:
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
        self.regional_fallback = Gauge(
            "drwatch_regional_fallback",
            "1 when a standby region could take the service over now (it is known and not "
            "lost), 0 when the service has no regional fallback.",
            registry=r,
        )

    def update_from_report(self, report: ReportLike) -> None:
        """Open incidents by scope, the ones opened this tick, the cycle's own warnings."""
        by_scope: dict[Scope, int] = {}
        for inc in report.open_incidents:
            by_scope[inc.scope] = by_scope.get(inc.scope, 0) + 1
        self.set_active(by_scope)
        self._count_opened(report.changes)
        warnings = [d for d in report.findings if d.severity is Severity.WARNING]
        self.set_warnings(_CYCLE_WARNINGS, warnings)

    def _count_opened(self, changes: Sequence[ChangeLike]) -> None:
        for change in changes:
            scope = change.scope_key.partition(":")[0]
            if change.change == "opened" and scope in _SCOPES:
                self.opened(Scope(scope))

    def set_active(self, by_scope: Mapping[Scope, int]) -> None:
        """Open incidents per scope; scopes not named are set to 0."""
        for scope in Scope:
            self.incidents_active.labels(scope.value).set(by_scope.get(scope, 0))

    def opened(self, scope: Scope) -> None:
        self.incidents_opened.labels(scope.value).inc()

    def set_warnings(self, kinds: Iterable[Finding], found: Iterable[DiagnosisLike]) -> None:
        """Count `found` by finding: every one of `kinds` is set, at 0 when none is found."""
        counts = dict.fromkeys(kinds, 0)
        for d in found:
            counts[d.finding] = counts.get(d.finding, 0) + 1
        for finding, count in counts.items():
            self.warnings.labels(finding.value).set(count)

    def update_readiness(self, diagnoses: Iterable[DiagnosisLike], fallback: bool) -> None:
        self.set_warnings(READINESS_FINDINGS, diagnoses)
        self.regional_fallback.set(1 if fallback else 0)
