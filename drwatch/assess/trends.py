"""Early warning, pure: recent agent samples and `now` in, trend findings out.

- disk_full_soon: per disk, a median-of-slopes fit (Theil-Sen over pairs half the
  window apart: a few wild samples, a log rotated mid-window, cannot bend it the way
  they bend least squares) of used bytes over the window; when the fitted line
  reaches the disk's size within `disk_full_horizon`, a warning with the estimated
  time. Too few samples, or samples spanning too little of the window, give no
  estimate rather than a wrong one.
- cpu_pressure / memory_pressure: usage at or above the threshold in every sample of
  the last run, and that run has lasted `sustain` or longer: a warning saying how long.

These are warnings: they open no incident and start no playbook. They do not pass
through the cycle; the daemon runs them beside it and shows them with its findings.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from drwatch.config import TrendsConfig
from drwatch.model.findings import Diagnosis, Finding, scope_key
from drwatch.model.fleet import Instance
from drwatch.model.plan import Scope
from drwatch.model.samples import History, Sample, VolumeState

# A fit must cover at least this share of the window to say anything.
MIN_SPAN_SHARE = 1 / 3
# The fit reads at most this many samples, evenly spread over the window (the first and
# the newest always): a pass over 10,000 instances must not stall the event loop.
MAX_FIT_POINTS = 40


@dataclass(frozen=True, slots=True)
class DiskTrend:
    """One disk's fit. `eta_s` is None when the disk is not growing."""

    instance_id: str
    instance: str
    mount: str
    used_percent: float
    rate_bytes_per_s: float
    eta_s: float | None
    samples: int
    span_s: float


@dataclass(frozen=True, slots=True)
class Pressure:
    """How long CPU or memory has stayed at or above its threshold (0: not now)."""

    instance_id: str
    instance: str
    resource: str
    lasted_s: float
    percent: float


@dataclass(frozen=True, slots=True)
class TrendReport:
    diagnoses: tuple[Diagnosis, ...] = ()
    disks: tuple[DiskTrend, ...] = ()
    pressure: tuple[Pressure, ...] = ()


def median_slope_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(slope, intercept) of a robust line through `points` (sorted by x): the median of
    the slopes between each point and the one half the series later (Theil-Sen over
    pairs a half-window apart: linear in the points, and a quarter of them may be wild
    before the slope moves), then the median intercept. None without two distinct x."""
    half = len(points) // 2
    slopes = [
        (points[i + half][1] - points[i][1]) / (points[i + half][0] - points[i][0])
        for i in range(len(points) - half)
        if half and points[i + half][0] != points[i][0]
    ]
    if not slopes:
        return None
    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * x for x, y in points)
    return slope, intercept


def _spread(samples: Sequence[Sample], most: int) -> Sequence[Sample]:
    """At most `most` samples, evenly spaced by position, keeping the first and the last."""
    n = len(samples)
    if n <= most:
        return samples
    step = (n - 1) / (most - 1)
    return [samples[round(i * step)] for i in range(most)]


def disk_trend(
    inst: Instance, samples: Sequence[Sample], mount: str, now: float, cfg: TrendsConfig
) -> DiskTrend | None:
    """The fit for one disk, or None when the samples cannot support one."""
    if len(samples) < cfg.min_samples:
        return None
    rows = [(s.at, d) for s in _spread(samples, MAX_FIT_POINTS) if (d := s.disk(mount))]
    if len(rows) < min(cfg.min_samples, MAX_FIT_POINTS):
        return None
    span = rows[-1][0] - rows[0][0]
    if span < cfg.window * MIN_SPAN_SHARE:
        return None
    # Relative times keep the arithmetic well away from float's limits.
    t0 = rows[0][0]
    fit = median_slope_fit([(t - t0, float(d.used_bytes)) for t, d in rows])
    if fit is None:
        return None
    slope, intercept = fit
    newest = rows[-1][1]
    used_now = min(float(newest.total_bytes), max(0.0, intercept + slope * (now - t0)))
    eta = (newest.total_bytes - used_now) / slope if slope > 0 else None
    return DiskTrend(
        instance_id=inst.id,
        instance=inst.name,
        mount=mount,
        used_percent=newest.used_percent,
        rate_bytes_per_s=slope,
        eta_s=eta,
        samples=len(samples),
        span_s=span,
    )


def _lasted(
    samples: Sequence[Sample], value: Callable[[Sample], float | None], threshold: float
) -> tuple[float, float]:
    """How long the newest unbroken run of samples at or above `threshold` has lasted,
    and the newest value. A sample without the value breaks the run."""
    newest = value(samples[-1]) if samples else None
    if newest is None or newest < threshold:
        return 0.0, newest or 0.0
    start = samples[-1].at
    for s in reversed(samples):
        v = value(s)
        if v is None or v < threshold:
            break
        start = s.at
    return samples[-1].at - start, newest


def _about(
    inst: Instance,
    finding: Finding,
    evidence: str,
    since: float | None,
    facts: tuple[tuple[str, str], ...],
) -> Diagnosis:
    return Diagnosis(
        finding=finding,
        key=scope_key(Scope.INSTANCE, inst.id),
        region=inst.region,
        zone=inst.zone,
        roles=(inst.role,),
        groups=(inst.group,),
        targets=(inst.id,),
        evidence=f"{inst.name}: {evidence}",
        since=since,
        facts=facts,
    )


def human(seconds: float) -> str:
    """`3 h 20 min`, `12 min`, `2 min 50 s`, `40 s`: an estimate reads better rounded."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 600:
        return f"{int(seconds // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{max(0, int(seconds))} s"


def _disk_diagnosis(inst: Instance, t: DiskTrend, now: float, cfg: TrendsConfig) -> Diagnosis:
    assert t.eta_s is not None
    rate = t.rate_bytes_per_s * 3600 / 2**30
    evidence = (
        f"disk {t.mount} {t.used_percent:.0f}% used, growing {rate:.2f} GiB/h: "
        f"full in about {human(t.eta_s)} (fit of {t.samples} samples over {human(t.span_s)})"
    )
    facts = (("mount", t.mount), ("eta_s", f"{t.eta_s:.0f}"), ("full_at", f"{now + t.eta_s:.0f}"))
    return _about(inst, Finding.DISK_FULL_SOON, evidence, now - t.span_s, facts)


_PRESSURE: tuple[tuple[str, Finding, Callable[[Sample], float | None], str], ...] = (
    ("cpu", Finding.CPU_PRESSURE, lambda s: s.cpu_percent, "cpu_percent"),
    ("memory", Finding.MEMORY_PRESSURE, lambda s: s.memory_percent, "memory_percent"),
)


def _pressures(inst: Instance, samples: Sequence[Sample], cfg: TrendsConfig) -> Iterable[Pressure]:
    for resource, _finding, value, threshold_key in _PRESSURE:
        threshold: float = getattr(cfg, threshold_key)
        lasted, pct = _lasted(samples, value, threshold)
        yield Pressure(inst.id, inst.name, resource, lasted, pct)


def _pressure_diagnosis(inst: Instance, p: Pressure, now: float, cfg: TrendsConfig) -> Diagnosis:
    finding = Finding.CPU_PRESSURE if p.resource == "cpu" else Finding.MEMORY_PRESSURE
    threshold = cfg.cpu_percent if p.resource == "cpu" else cfg.memory_percent
    evidence = (
        f"{p.resource} {p.percent:.0f}% used, at or above {threshold:g}% for {human(p.lasted_s)}"
    )
    return _about(inst, finding, evidence, now - p.lasted_s, (("lasted_s", f"{p.lasted_s:.0f}"),))


BAD_VOLUME_STATES = frozenset({"error"})
BAD_VOLUME_STATUSES = frozenset({"impaired", "warning"})


def assess_volumes(
    instances: Iterable[Instance], volumes: Iterable[VolumeState], now: float
) -> list[Diagnosis]:
    """volume_impaired for each failed or impaired volume attached to a watched instance."""
    by_id = {i.id: i for i in instances}
    out = []
    for v in volumes:
        inst = by_id.get(v.attached_to or "")
        if inst is None or not (v.state in BAD_VOLUME_STATES or v.status in BAD_VOLUME_STATUSES):
            continue
        said = ", ".join(
            p for p in (f"state {v.state}", f"status {v.status}" if v.status else "") if p
        )
        facts = (("volume", v.id), ("state", v.state), ("status", v.status))
        out.append(
            _about(
                inst, Finding.VOLUME_IMPAIRED, f"volume {v.id}: provider says {said}", None, facts
            )
        )
    return out


def assess_trends(
    instances: Iterable[Instance],
    history: History,
    now: float,
    cfg: TrendsConfig,
    volumes: Iterable[VolumeState] = (),
) -> TrendReport:
    """Every instance's disk fits and pressure runs, the provider's word on its volumes,
    and the warnings they make."""
    instances = tuple(instances)
    diagnoses: list[Diagnosis] = assess_volumes(instances, volumes, now)
    disks: list[DiskTrend] = []
    pressure: list[Pressure] = []
    for inst in instances:
        samples = history.get(inst.id, ())
        if not samples:
            continue
        # The disks the newest sample reports: one that went away has nothing to warn of.
        for mount in sorted(d.mount for d in samples[-1].disks):
            t = disk_trend(inst, samples, mount, now, cfg)
            if t is None:
                continue
            disks.append(t)
            if t.eta_s is not None and t.eta_s <= cfg.disk_full_horizon:
                diagnoses.append(_disk_diagnosis(inst, t, now, cfg))
        for p in _pressures(inst, samples, cfg):
            pressure.append(p)
            if p.lasted_s >= cfg.sustain:
                diagnoses.append(_pressure_diagnosis(inst, p, now, cfg))
    return TrendReport(tuple(diagnoses), tuple(disks), tuple(pressure))
