"""drwatch's own fixed-rate check scheduler.

One driver coroutine keeps a heap of (due time, job) and sleeps until the earliest
one; a due job is queued for a fixed pool of `concurrency` workers. There is no task
per job sleeping between checks and no task per check: at 10,000 jobs the heap costs
one entry each and the loop's timer heap one timer (bench/README.md has the numbers).

Rules, each visible in a test:
- fixed rate: slot k of a job is due at `phase + k * interval`, never drifting with
  how long a check took; the phase comes from a stable hash of the key, so 10,000
  targets spread over the interval instead of firing in one burst, and a key keeps
  its phase across `set_jobs` calls and restarts;
- at most one check in flight per job: slots that pass while the previous check still
  runs (or waits for a worker) are skipped, and counted when it ends;
- every check has a deadline (`job.timeout`): past it the check is cancelled and the
  result is an UNKNOWN observation "timeout after Ns"; a check that raises is an
  UNKNOWN observation too, logged once when it starts failing. The driver enforces
  deadlines on its own wake-ups (within a tenth of the shortest timeout) instead of a
  timer per check: the probes keep their own precise deadlines, and a check that
  swallows its cancellation loses its worker instead of holding it;
- the worker pool bounds checks in flight across all jobs; a slow target holds one
  worker until its deadline, so it delays no other job unless every worker is held.
  Waiting for a worker shows as schedule lag.
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
_MIN_TICK_S = 0.005
# The driver sleeps at least this long, firing every job due by then in one wake-up:
# at 2,000 checks/s it wakes 200 times a second, not 2,000, for at most 5 ms of lag.
_QUANTUM_S = 0.005


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


@dataclass(slots=True)
class _Slot:
    """One worker: the check it runs now and when (loop time) that check's deadline falls.
    `reaped` tells a worker whose check was timed out to stop when it comes back."""

    job: CheckJob | None = None
    due: float = 0.0
    deadline: float = math.inf
    attempted_at: float = 0.0
    reaped: bool = False
    task: asyncio.Task[None] | None = None


class CheckScheduler:
    """Runs a replaceable set of `CheckJob`s at a fixed rate until cancelled."""

    def __init__(
        self,
        concurrency: int,
        on_result: ResultSink,
        *,
        clock: Clock = time.monotonic,
        lag_window: int = _LAG_WINDOW,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        self._on_result = on_result
        self._clock = clock
        self._concurrency = concurrency
        self._jobs: dict[str, CheckJob] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._entry: dict[str, int] = {}  # key -> seq of its live heap entry
        self._busy: set[str] = set()  # keys queued or running: at most one each
        # Fired jobs waiting for a worker, and their due times: two deques rather than one
        # of tuples, so queueing a check allocates nothing the garbage collector tracks
        # (a saturated scheduler otherwise spends a tenth of its CPU in gen-0 collections).
        self._ready: deque[CheckJob] = deque()
        self._ready_due: deque[float] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        self._failing: dict[str, str] = {}
        self._sink_errors: set[str] = set()
        self._lag = _Lag(lag_window)
        self._started = self._skipped = self._timeouts = self._errors = 0
        self._waiter: asyncio.Future[None] | None = None
        self._slots: list[_Slot] = []
        self._tg: asyncio.TaskGroup | None = None
        self._tick = _MAX_IDLE_S
        self._wake_at = -math.inf  # clock time the sleeping driver wakes at

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
        shortest = min((j.timeout for j in jobs.values()), default=_MAX_IDLE_S * 10)
        self._tick = min(max(shortest / 10, _MIN_TICK_S), _MAX_IDLE_S)
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
            in_flight=len(self._busy),
        )

    # -- the driver ----------------------------------------------------------------

    async def run(self) -> None:
        """Fire jobs as they come due, until cancelled; cancelling also cancels the checks
        in flight. `concurrency` workers run the checks: a worker per check in flight is
        cheaper than a task per check, and needs no semaphore."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._slots = [self._spawn() for _ in range(self._concurrency)]
                await self._drive()
        finally:
            self._tg = None
            self._slots.clear()
            self._ready.clear()
            self._ready_due.clear()
            self._idle.clear()
            self._busy.clear()
            self._requeue_orphans()

    def _requeue_orphans(self) -> None:
        """Jobs whose checks were cancelled with run() are off the heap: put them back, so a
        restarted run() checks them again."""
        now = self._clock()
        for key, job in self._jobs.items():
            if key not in self._entry:
                self._push(first_due(key, job.interval, now), key)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            nxt = self.fire_due(self._clock())
            self._reap(loop.time())
            limit = self._tick if self._busy else _MAX_IDLE_S
            now = self._clock()
            delay = limit if nxt is None else max(min(nxt - now, limit), _QUANTUM_S)
            self._wake_at = now + delay
            await self._sleep(delay)
            self._wake_at = -math.inf

    def _spawn(self) -> _Slot:
        assert self._tg is not None, "workers run inside run()"
        slot = _Slot()
        slot.task = self._tg.create_task(self._worker(slot), name="check-worker")
        return slot

    def _reap(self, now: float) -> None:
        """Cancel checks past their deadline, report them UNKNOWN, replace their workers."""
        for i, slot in enumerate(self._slots):
            job = slot.job
            if job is None or now < slot.deadline:
                continue
            slot.reaped = True
            if slot.task is not None:
                slot.task.cancel()
            self._slots[i] = self._spawn()
            self._timeouts += 1
            self._finished(job, slot.due)
            self._deliver(_unknown(job, slot.attempted_at, _timeout_reason(job)))

    def fire_due(self, now: float) -> float | None:
        """Queue every job due at or before `now` for the workers; return the next due time
        (None: no jobs). `run()` calls this in its loop; tests call it with a fake clock."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, seq, key = heapq.heappop(heap)
            job = self._jobs.get(key)
            if job is None or self._entry.get(key) != seq:
                continue  # removed, or rescheduled under a new interval
            # A job leaves the heap while in flight; its completion puts it back on its
            # next slot. A saturated scheduler so does no heap work for skipped slots.
            del self._entry[key]
            if key in self._busy:
                self._skipped += 1  # re-added while its old check still runs
                continue
            self._fire(job, due)
        return heap[0][0] if heap else None

    def _finished(self, job: CheckJob, due: float) -> None:
        """Free the job's in-flight mark and put it back on its next slot, counting the
        slots it missed while running (or waiting for a worker)."""
        key = job.key
        self._busy.discard(key)
        current = self._jobs.get(key)
        if current is None or key in self._entry:
            return  # removed, or set_jobs already scheduled it anew
        if current.interval == job.interval:
            nxt, missed = next_due(due, job.interval, self._clock())
            self._skipped += missed
        else:
            nxt = first_due(key, current.interval, self._clock())
        self._push(nxt, key)

    def _push(self, due: float, key: str) -> None:
        self._seq += 1
        self._entry[key] = self._seq
        heapq.heappush(self._heap, (due, self._seq, key))
        if due + _QUANTUM_S < self._wake_at:
            self._wake()  # the driver sleeps well past this slot: bring it forward

    def _fire(self, job: CheckJob, due: float) -> None:
        self._busy.add(job.key)
        self._ready.append(job)
        self._ready_due.append(due)
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

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

    async def _worker(self, slot: _Slot) -> None:
        ready = self._ready
        loop = asyncio.get_running_loop()
        while not slot.reaped:
            if not ready:
                # Waiting for work has no deadline of its own: it ends when a job is
                # queued or when run() is cancelled. Every check below has one.
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            job, due = ready.popleft(), self._ready_due.popleft()
            self._lag.add(self._clock() - due)
            self._started += 1
            slot.job, slot.due, slot.attempted_at = job, due, time.time()
            slot.deadline = loop.time() + job.timeout
            obs = await self._attempt(job, slot.attempted_at)
            if _was_reaped(slot):
                return  # timed out and already reported; a new worker took this place
            slot.job, slot.deadline = None, math.inf
            self._finished(job, due)
            self._deliver(obs)

    async def _attempt(self, job: CheckJob, attempted_at: float) -> Observation:
        try:
            obs = await job.run()
        except TimeoutError:
            # The check's own deadline (a probe's) said the same thing as ours would.
            self._timeouts += 1
            return _unknown(job, attempted_at, _timeout_reason(job))
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
            kind = type(err).__name__
            if kind not in self._sink_errors:  # once per kind of failure, not per check
                self._sink_errors.add(kind)
                _logger().exception(
                    "check.sink_failed", target=obs.target, layer=obs.layer, error=str(err)
                )


def _was_reaped(slot: _Slot) -> bool:
    # A function, so the type checker does not carry the loop's narrowing across the await.
    return slot.reaped


def _timeout_reason(job: CheckJob) -> str:
    return f"timeout after {seconds(job.timeout)}"


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
