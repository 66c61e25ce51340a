"""Backup jobs on APScheduler 3.11, inside the daemon's loop: one job per class and kind.

Overlapping runs are skipped (`max_instances=1`), runs missed while the loop was busy
collapse into one (`coalesce=True`), and a class whose newest verified backup is
already older than its interval when drwatch starts runs at once (`first_run`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from drwatch.backup.catalogue import Entry
from drwatch.backup.model import State


@dataclass(frozen=True)
class Job:
    """One schedule: `run` backs up `data_class` as `kind` (at `location` for
    `first_run`'s purpose: the primary, where every run starts)."""

    data_class: str
    kind: str
    every: float
    run: Callable[[], Awaitable[object]]
    location: str = "primary"

    @property
    def id(self) -> str:
        return f"backup:{self.data_class}:{self.kind}"


def first_run(job: Job, entries: Iterable[Entry], now: float) -> float:
    """When the job first runs: now when its newest verified backup is already older
    than its interval (or there is none), else when that backup reaches that age."""
    newest = max(
        (
            e.created_at
            for e in entries
            if e.data_class == job.data_class
            and e.kind == job.kind
            and e.location == job.location
            and e.state is State.VERIFIED
        ),
        default=None,
    )
    if newest is None or now - newest >= job.every:
        return now
    return newest + job.every


class BackupScheduler:
    """Owns an AsyncIOScheduler; `start` must be called inside the running loop."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self, entries: Iterable[Entry], now: float, stagger: float = 0.0) -> None:
        """Schedule every job; with `stagger`, the n-th job's first run waits n x stagger
        more (runs due at once do not all hit the object store at the same moment)."""
        known = list(entries)
        for n, job in enumerate(self.jobs):
            first = first_run(job, known, now) + n * stagger
            self._scheduler.add_job(
                _logged(job),
                IntervalTrigger(seconds=job.every, start_date=_utc(first)),
                id=job.id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(job.every)),
                next_run_time=_utc(first),
            )
        self._scheduler.start()

    def next_run(self, job_id: str) -> float | None:
        job = self._scheduler.get_job(job_id)
        when = job.next_run_time if job is not None else None
        return when.timestamp() if when is not None else None

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _logged(job: Job) -> Callable[[], Awaitable[None]]:
    """The job's run; an error is logged once and the schedule goes on (the catalogue
    already holds the failed run: the runner records every outcome)."""

    async def run() -> None:
        log: Any = structlog.get_logger("drwatch.backup")
        try:
            await job.run()
        except Exception as err:
            log.error("backup.job_failed", job=job.id, error=f"{type(err).__name__}: {err}")

    return run
