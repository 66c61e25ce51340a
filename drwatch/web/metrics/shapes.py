"""What metrics read of the cycle's report and the trends report: structural Protocols,
so web imports neither cycle nor assess.trends for them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from drwatch.model import Scope
from drwatch.model.findings import Finding, Severity


class ChangeLike(Protocol):
    @property
    def scope_key(self) -> str: ...
    @property
    def change(self) -> str: ...


class IncidentLike(Protocol):
    @property
    def scope(self) -> Scope: ...


class DiagnosisLike(Protocol):
    @property
    def finding(self) -> Finding: ...
    @property
    def severity(self) -> Severity: ...


class OverdueLike(Protocol):
    @property
    def incident(self) -> IncidentLike: ...


class ReportLike(Protocol):
    """What metrics read of the cycle's TickReport (structural: web does not import cycle)."""

    @property
    def watcher_state(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def open_incidents(self) -> Sequence[IncidentLike]: ...
    @property
    def changes(self) -> Sequence[ChangeLike]: ...
    @property
    def findings(self) -> Sequence[DiagnosisLike]: ...
    @property
    def rto_overdue(self) -> Sequence[OverdueLike]: ...


class DiskTrendLike(Protocol):
    @property
    def instance(self) -> str: ...
    @property
    def mount(self) -> str: ...
    @property
    def rate_bytes_per_s(self) -> float: ...
    @property
    def eta_s(self) -> float | None: ...


class PressureLike(Protocol):
    @property
    def instance(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def lasted_s(self) -> float: ...


class TrendsLike(Protocol):
    """What metrics read of drwatch.assess.trends.TrendReport."""

    @property
    def diagnoses(self) -> Sequence[DiagnosisLike]: ...
    @property
    def disks(self) -> Sequence[DiskTrendLike]: ...
    @property
    def pressure(self) -> Sequence[PressureLike]: ...
