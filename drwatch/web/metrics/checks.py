"""The checks' series: how many ran by layer and result, and how long they took."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from drwatch.model import Observation

# Latency buckets for checks, cut at the longest configured timeout (a check cannot
# take longer), so every bucket says something.
_CHECK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def check_buckets(max_timeout: float) -> tuple[float, ...]:
    """Histogram buckets up to `max_timeout` seconds, which is always the last finite bucket."""
    below = tuple(b for b in _CHECK_BUCKETS if b < max_timeout)
    return (*below, float(max_timeout))


class CheckSeries:
    """`drwatch_checks_total` and `drwatch_check_duration_seconds`."""

    def __init__(self, r: CollectorRegistry, max_check_timeout: float) -> None:
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

    def record(self, obs: Observation, duration: float | None) -> None:
        self.checks.labels(obs.layer.value, obs.health.value).inc()
        took = obs.latency_s if duration is None else duration
        if took is not None:
            self.check_duration.labels(obs.layer.value).observe(took)
