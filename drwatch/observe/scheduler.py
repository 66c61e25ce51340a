"""drwatch's own fixed-rate check scheduler.

One driver coroutine keeps a heap of (due time, job) and sleeps until the earliest
one; a firing job runs in a short-lived task owned by the scheduler. There is no task
per job sleeping between checks: at 10,000 jobs the heap costs one entry each, and
the loop's timer heap holds one timer (see bench/README.md for the measurements).

Rules, each visible in a test:
- fixed rate: slot k of a job is due at `phase + k * interval`, never drifting with
  how long a check took; the phase comes from a stable hash of the key, so 10,000
  targets spread over the interval instead of firing in one burst, and a key keeps
  its phase across `set_jobs` calls and restarts;
- at most one check in flight per job: a slot that comes while the previous check
  still runs is skipped and counted;
- every check has a deadline (`job.timeout`): past it the result is an UNKNOWN
  observation "timeout after Ns"; a check that raises is an UNKNOWN observation too,
  logged once when it starts failing;
- a semaphore bounds checks in flight across all jobs; a slow target only holds its
  own slot, so it delays no other job unless the whole budget is spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from drwatch.logs import get_logger
from drwatch.model.observation import Health, Layer, Observation
from drwatch.probes.result import seconds


def _logger() -> Any:
    # Bound at use, not import: a logger bound before logs.configure() keeps the defaults.
    return get_logger(component="scheduler")


Clock = Callable[[], float]
ResultSink = Callable[[Observation], None]
CheckRun = Callable[[], Awaitable[Observation]]
# The driver never sleeps longer than this, so a clock jump or a lost wake-up heals.
_MAX_IDLE_S = 1.0
_LAG_WINDOW = 4096


@dataclass(frozen=True, slots=True)
class CheckJob:
    """One periodic check. `run` returns the observation; the scheduler adds the deadline."""

    key: str
    interval: float
    timeout: float
    run: CheckRun
    layer: Layer
    target: str


@dataclass(frozen=True, slots=True)
class LagStats:
    """Schedule lag (actual start - due time, seconds) over the last `window` starts,
    and counters since the scheduler was built."""

    window: int
    p50: float
    p99: float
    max: float
    started: int
    skipped: int
    timeouts: int
    errors: int
    in_flight: int


def phase_of(key: str, interval: float) -> float:
    """Where in each interval `key` fires, in [0, interval): stable across processes
    (not Python's salted `hash`), so restarts keep the spread."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 * interval


def first_due(key: str, interval: float, now: float) -> float:
    """The first slot of `key` at or after `now`."""
    phase = phase_of(key, interval)
    return phase + math.ceil((now - phase) / interval) * interval


def next_due(due: float, interval: float, now: float) -> tuple[float, int]:
    """The slot after `due`, and how many slots were missed because the loop fell behind
    (those are skipped, not fired back to back)."""
    nxt = due + interval
    if nxt >= now:
        return nxt, 0
    missed = math.ceil((now - nxt) / interval)
    return nxt + missed * interval, missed


class _Lag:
    """A ring of recent lag samples; percentiles are computed only when asked."""

    def __init__(self, window: int = _LAG_WINDOW) -> None:
        self.samples: deque[float] = deque(maxlen=window)

    def add(self, lag: float) -> None:
        self.samples.append(lag)

    def percentiles(self) -> tuple[float, float, float]:
        if not self.samples:
            return 0.0, 0.0, 0.0
        ordered = sorted(self.samples)
        last = len(ordered) - 1
        return ordered[last // 2], ordered[math.ceil(last * 0.99)], ordered[last]


class CheckScheduler:
    """Runs a replaceable set of `CheckJob`s at a fixed rate until cancelled."""

    def __init__(
        self, concurrency: int, on_result: ResultSink, *, clock: Clock = time.monotonic
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        self._on_result = on_result
        self._clock = clock
        self._sem = asyncio.Semaphore(concurrency)
        self._jobs: dict[str, CheckJob] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._entry: dict[str, int] = {}  # key -> seq of its live heap entry
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failing: dict[str, str] = {}
        self._lag = _Lag()
        self._started = self._skipped = self._timeouts = self._errors = 0
        self._waiter: asyncio.Future[None] | None = None

    # -- the job set ---------------------------------------------------------------

    def set_jobs(self, jobs: Mapping[str, CheckJob]) -> None:
        """Replace the job set: new keys start at their phase, removed keys stop (a check
        in flight finishes, its result still delivered), kept keys keep their slot."""
        now = self._clock()
        for key in self._jobs.keys() - jobs.keys():
            del self._jobs[key]
            self._entry.pop(key, None)
            self._failing.pop(key, None)
        for key, job in jobs.items():
            old = self._jobs.get(key)
            self._jobs[key] = job
            if old is None or old.interval != job.interval:
                self._push(first_due(key, job.interval, now), key)
        self._wake()

    def jobs(self) -> Mapping[str, CheckJob]:
        return dict(self._jobs)

    def lag_stats(self) -> LagStats:
        p50, p99, worst = self._lag.percentiles()
        return LagStats(
            window=len(self._lag.samples),
            p50=p50,
            p99=p99,
            max=worst,
            started=self._started,
            skipped=self._skipped,
            timeouts=self._timeouts,
            errors=self._errors,
            in_flight=len(self._running),
        )

    # -- the driver ----------------------------------------------------------------

    async def run(self) -> None:
        """Fire jobs as they come due, until cancelled; then cancel the checks in flight."""
        try:
            while True:
                nxt = self.fire_due(self._clock())
                delay = _MAX_IDLE_S if nxt is None else min(nxt - self._clock(), _MAX_IDLE_S)
                if delay > 0:
                    await self._sleep(delay)
        finally:
            await self.aclose()

    def fire_due(self, now: float) -> float | None:
        """Start every job due at or before `now`; return the next due time (None: no jobs).
        `run()` calls this in its loop; tests call it with a fake clock."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, seq, key = heapq.heappop(heap)
            job = self._jobs.get(key)
            if job is None or self._entry.get(key) != seq:
                continue  # removed, or rescheduled under a new interval
            nxt, missed = next_due(due, job.interval, now)
            self._skipped += missed
            self._push(nxt, key)
            self._fire(job, due)
        return heap[0][0] if heap else None

    async def aclose(self) -> None:
        """Cancel every check in flight and wait for them to end."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()

    def _push(self, due: float, key: str) -> None:
        self._seq += 1
        self._entry[key] = self._seq
        heapq.heappush(self._heap, (due, self._seq, key))

    def _fire(self, job: CheckJob, due: float) -> None:
        if job.key in self._running:
            self._skipped += 1
            return
        task = asyncio.create_task(self._check(job, due), name=f"check:{job.key}")
        self._running[job.key] = task
        task.add_done_callback(partial(self._finished, job.key))

    def _finished(self, key: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)

    async def _sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        # A bare future plus one timer is the cheapest wait that `set_jobs` can cut short.
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    # -- one check -----------------------------------------------------------------

    async def _check(self, job: CheckJob, due: float) -> None:
        async with self._sem:
            started = self._clock()
            self._lag.add(started - due)
            self._started += 1
            obs = await self._attempt(job)
        self._deliver(obs)

    async def _attempt(self, job: CheckJob) -> Observation:
        attempted_at = time.time()
        try:
            async with asyncio.timeout(job.timeout):
                obs = await job.run()
        except TimeoutError:
            self._timeouts += 1
            return _unknown(job, attempted_at, f"timeout after {seconds(job.timeout)}")
        except Exception as err:  # a broken check must never stop the others
            self._errors += 1
            reason = f"check failed: {type(err).__name__}"
            self._note_failure(job, reason, err)
            return _unknown(job, attempted_at, reason)
        if self._failing.pop(job.key, None) is not None:
            _logger().info("check.recovered", key=job.key, layer=job.layer, target=job.target)
        return obs

    def _note_failure(self, job: CheckJob, reason: str, err: Exception) -> None:
        if self._failing.get(job.key) == reason:
            return
        self._failing[job.key] = reason
        _logger().warning(
            "check.failed",
            key=job.key,
            layer=job.layer,
            target=job.target,
            reason=reason,
            error=str(err)[:200],
        )

    def _deliver(self, obs: Observation) -> None:
        try:
            self._on_result(obs)
        except Exception as err:  # the sink's bug must not kill the scheduler
            _logger().exception(
                "check.sink_failed", target=obs.target, layer=obs.layer, error=str(err)
            )


def _unknown(job: CheckJob, attempted_at: float, reason: str) -> Observation:
    return Observation(
        target=job.target,
        layer=job.layer,
        health=Health.UNKNOWN,
        attempted_at=attempted_at,
        reason=reason,
    )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
