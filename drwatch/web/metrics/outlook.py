"""Early warnings (disk fits, pressure runs) and the drill ledger's newest drills, as
series replaced whole on each refresh: a disk that stops growing loses its ETA series."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch.web.metrics.shapes import TrendsLike

DEFAULT_DRILL_INTERVAL_S = 182 * 86400.0


class OutlookCollector(Collector):
    """The disks' growth and ETA, the pressure runs, and the drills' due dates."""

    def __init__(self) -> None:
        self._disks: tuple[tuple[str, str, float, float | None], ...] = ()
        self._pressure: tuple[tuple[str, str, float], ...] = ()
        self._drills: Mapping[tuple[str, str], float] = {}
        self._interval = DEFAULT_DRILL_INTERVAL_S
        self._required: tuple[str, ...] = ()

    def set_trends(self, trends: TrendsLike) -> None:
        self._disks = tuple(
            (t.instance, t.mount, t.rate_bytes_per_s, t.eta_s) for t in trends.disks
        )
        self._pressure = tuple((p.instance, p.resource, p.lasted_s) for p in trends.pressure)

    def set_drills(
        self, latest: Mapping[tuple[str, str], float], interval: float, required: Iterable[str]
    ) -> None:
        self._drills, self._interval, self._required = dict(latest), interval, tuple(required)

    def collect(self) -> Iterable[Metric]:
        yield from self._collect_disks()
        yield self._collect_pressure()
        yield from self._collect_drills()

    def _collect_disks(self) -> Iterable[Metric]:
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
        yield from (eta, rate)

    def _collect_pressure(self) -> Metric:
        pressure = GaugeMetricFamily(
            "drwatch_pressure_seconds",
            "How long CPU or memory use has stayed at or above its trends threshold (0: not now).",
            labels=["instance", "resource"],
        )
        for instance, resource, lasted in self._pressure:
            pressure.add_metric([instance, resource], lasted)
        return pressure

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
