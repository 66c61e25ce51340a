"""Early warning: the robust disk fit, pressure runs, and the sample history feeding them."""

from __future__ import annotations

import random

import pytest

from drwatch.assess.trends import assess_trends, disk_trend, median_slope_fit
from drwatch.config import TrendsConfig
from drwatch.model.findings import Finding, Severity
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.model.observation import Health, Layer, Observation
from drwatch.model.samples import DiskSample, Sample
from drwatch.observe.samples import SampleHistory, sample_from

GIB = 2**30
APP = Instance("i-3", "app-3", "us-east-1", "us-east-1b", Role.APP_SERVER, "app")
CFG = TrendsConfig(window=600, min_samples=10, disk_full_horizon=3600, sustain=120)


def disk_series(
    n: int, step: float, start_used: float, rate: float, total: float = 100 * GIB
) -> tuple[Sample, ...]:
    return tuple(
        Sample(at=i * step, disks=(DiskSample("/", int(total), int(start_used + rate * i * step)),))
        for i in range(n)
    )


def test_the_fit_recovers_a_line_through_wild_points() -> None:
    """A fifth of the points thrown far off (a log rotated, a bad read) move the slope
    by under a percent; least squares would be dragged along."""
    rng = random.Random(7)
    points = [(float(x), 3.0 * x + 50.0) for x in range(100)]
    for i in rng.sample(range(100), 20):
        points[i] = (points[i][0], rng.uniform(-5000, 5000))
    fit = median_slope_fit(points)
    assert fit is not None
    assert fit[0] == pytest.approx(3.0, rel=0.01)


def test_steady_growth_gives_the_time_until_full() -> None:
    """50 GiB used, 10 MiB/s: the 50 GiB left fill in 5120 s."""
    samples = disk_series(60, 5.0, 50 * GIB, 10 * 2**20)
    t = disk_trend(APP, samples, "/", now=samples[-1].at, cfg=CFG)
    assert t is not None
    assert t.eta_s is not None
    left = 100 * GIB - (50 * GIB + 10 * 2**20 * samples[-1].at)
    assert t.eta_s == pytest.approx(left / (10 * 2**20), rel=0.01)


def test_a_disk_full_within_the_horizon_is_a_warning_with_its_eta() -> None:
    """80 GiB used and 10 MiB/s: full in under the hour: disk_full_soon, a warning
    (no incident), with the ETA in its facts; before the disk is anywhere near 100%."""
    samples = disk_series(60, 5.0, 80 * GIB, 10 * 2**20)
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    (d,) = report.diagnoses
    assert d.finding is Finding.DISK_FULL_SOON
    assert d.severity is Severity.WARNING
    assert d.targets == ("i-3",)
    facts = dict(d.facts)
    assert facts["mount"] == "/"
    assert 0 < float(facts["eta_s"]) < 3600
    assert "full in about" in d.evidence


def test_a_disk_full_beyond_the_horizon_is_estimated_but_not_a_warning() -> None:
    samples = disk_series(60, 5.0, 10 * GIB, 2**20)  # ~25 hours left
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    assert report.diagnoses == ()
    (t,) = report.disks
    assert t.eta_s is not None
    assert t.eta_s > 3600


@pytest.mark.parametrize(
    ("n", "step"),
    [
        (9, 30.0),  # fewer samples than min_samples
        (40, 1.0),  # plenty of samples, but 39 s of a 600 s window
    ],
)
def test_too_little_history_gives_no_estimate(n: int, step: float) -> None:
    """A trend from too few samples, or too short a span, says nothing rather than
    something wrong: even a disk filling fast gets no estimate yet."""
    samples = disk_series(n, step, 90 * GIB, 100 * 2**20)
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    assert report.disks == ()
    assert report.diagnoses == ()


def test_a_flat_noisy_disk_is_not_filling() -> None:
    rng = random.Random(3)
    used = [int(80 * GIB + rng.uniform(-1, 1) * 2**26) for _ in range(100)]
    samples = tuple(
        Sample(at=i * 5.0, disks=(DiskSample("/", 100 * GIB, u),)) for i, u in enumerate(used)
    )
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    assert report.diagnoses == ()
    (t,) = report.disks
    assert t.eta_s is None or t.eta_s > 3600


def cpu_series(values: list[float], step: float = 10.0) -> tuple[Sample, ...]:
    return tuple(
        Sample(at=i * step, cpu_percent=v, memory_percent=40.0) for i, v in enumerate(values)
    )


def test_sustained_cpu_pressure_is_a_warning_with_how_long_it_lasted() -> None:
    """At or above 90% for the last 150 s (sustain 120 s): cpu_pressure, saying 2 min."""
    samples = cpu_series([20.0] * 10 + [95.0] * 16)
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    (d,) = report.diagnoses
    assert d.finding is Finding.CPU_PRESSURE
    assert dict(d.facts)["lasted_s"] == "150"
    assert "for 2 min" in d.evidence
    assert {p.resource: p.lasted_s for p in report.pressure} == {"cpu": 150.0, "memory": 0.0}


def test_a_dip_below_the_threshold_restarts_the_run() -> None:
    samples = cpu_series([95.0] * 20 + [50.0] + [95.0] * 5)
    report = assess_trends([APP], {"i-3": samples}, samples[-1].at, CFG)
    assert report.diagnoses == ()


def facts_obs(at: float, used_pct: float, health: Health = Health.UP) -> Observation:
    total = 1000
    return Observation(
        "i-3", Layer.AGENT, health, attempted_at=at,
        detail={
            "collected_at": at - 0.1,
            "cpu_percent": 12.0,
            "memory": {"used_percent": 50.0},
            "disks": {"/": {"total_bytes": total, "free_bytes": int(total * (1 - used_pct / 100))}},
        },
    )  # fmt: skip


def test_the_history_keeps_the_window_and_forgets_instances_that_left() -> None:
    history = SampleHistory(window=60.0, max_samples=1000)
    for i in range(100):
        history.record(facts_obs(float(i), 30.0))
    history.record(facts_obs(50.0, 30.0))  # out of order: ignored
    history.record(facts_obs(100.0, 30.0, Health.UNKNOWN))  # no facts from a failed poll
    kept = history.view(now=99.0)["i-3"]
    assert kept[0].at >= 39.0 - 0.1
    assert kept[-1].at == pytest.approx(98.9)
    assert kept[-1].disks[0].used_bytes == 300
    history.prune(Fleet())
    assert dict(history.view(now=99.0)) == {}


def test_a_sample_without_numbers_is_none() -> None:
    obs = Observation("i-3", Layer.AGENT, Health.UP, attempted_at=1.0, detail={"hostname": "x"})
    assert sample_from(obs) is None


def test_the_window_cannot_be_shorter_than_sustain() -> None:
    with pytest.raises(ValueError, match="sustain"):
        TrendsConfig(window=60, sustain=120)
