"""Playbook runs: how many finished by outcome, and how long runs and steps took."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram

from drwatch.model import RunOutcome, RunProgress, StepStatus

# Playbooks wait on the cloud: seconds to tens of minutes.
_PLAYBOOK_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
_STEP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
# Runs already counted, so a run reported on every tick is counted once.
_SEEN_RUNS_MAX = 4096


class PlaybookSeries:
    """`drwatch_playbook_runs_total`, `drwatch_playbook_duration_seconds` and
    `drwatch_playbook_step_duration_seconds`, each finished run counted once."""

    def __init__(self, r: CollectorRegistry) -> None:
        self._seen_runs: OrderedDict[str, None] = OrderedDict()
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

    def record_run(self, progress: RunProgress) -> None:
        """Count a finished run once (repeated reports of it are ignored); running runs wait."""
        if progress.outcome is RunOutcome.RUNNING or not self._first_report(progress.run_id):
            return
        playbook = progress.playbook.value
        self.playbook_runs.labels(playbook, progress.outcome.value).inc()
        if progress.ended_at is not None and progress.started_at:
            self.playbook_duration.labels(playbook).observe(
                max(0.0, progress.ended_at - progress.started_at)
            )
        for name, status, took in _finished_steps(progress):
            self.step_duration.labels(playbook, name, status).observe(took)

    def _first_report(self, run_id: str) -> bool:
        """True the first time a run is reported finished (the oldest are forgotten)."""
        if run_id in self._seen_runs:
            return False
        self._seen_runs[run_id] = None
        while len(self._seen_runs) > _SEEN_RUNS_MAX:
            self._seen_runs.popitem(last=False)
        return True


def _finished_steps(progress: RunProgress) -> Iterator[tuple[str, str, float]]:
    for step in progress.steps:
        if step.started_at is None or step.ended_at is None:
            continue
        if step.status in (StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED):
            yield step.name, step.status.value, max(0.0, step.ended_at - step.started_at)
