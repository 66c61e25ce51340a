"""CheckScheduler: fixed rate, spread start, one in flight, deadlines, errors, job sets.

Schedule arithmetic is driven through `fire_due(now)` with a fake clock, so no test
depends on how fast this machine is; the event loop only runs the started checks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from structlog.testing import capture_logs

from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.scheduler import CheckJob, CheckScheduler, first_due, next_due, phase_of


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Jobs whose checks record (key, fake time at start) and can be held in flight."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.starts: list[tuple[str, float]] = []
        self.results: list[Observation] = []
        self.hold: dict[str, asyncio.Event] = {}

    def job(self, key: str, interval: float = 1.0, timeout: float = 0.5) -> CheckJob:
        async def run() -> Observation:
            self.starts.append((key, self.clock.now))
            gate = self.hold.get(key)
            if gate is not None:
                await gate.wait()
            return Observation(key, Layer.APP, Health.UP, attempted_at=self.clock.now)

        return CheckJob(key, interval, timeout, run, Layer.APP, key)


async def settle() -> None:
    """Let started checks run to their first await (or to the end)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def step_until(
    sched: CheckScheduler, clock: FakeClock, end: float, step: float = 0.05
) -> None:
    while clock.now < end:
        clock.now = round(clock.now + step, 6)
        sched.fire_due(clock.now)
        await settle()


def make(clock: FakeClock, rec: Recorder, concurrency: int = 10) -> CheckScheduler:
    return CheckScheduler(concurrency, rec.results.append, clock=clock)


Start = Callable[[CheckScheduler], None]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Run schedulers (their workers and driver) for the test; cancel them afterwards."""
    tasks: list[asyncio.Task[None]] = []
    yield lambda sched: tasks.append(asyncio.create_task(sched.run()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# Pinned: a key fires at the same point of its interval in every process and release.
PINNED_PHASES = {("app:i-1", 5.0): 3.9895888873914553, ("zone:us-east-1a", 30.0): 18.33210958049219}


def test_phase_is_stable_and_within_interval() -> None:
    """A key's phase depends only on key and interval (the pinned values, and the same
    in another process with another hash seed), and lies in [0, interval)."""
    assert {k: phase_of(*k) for k in PINNED_PHASES} == PINNED_PHASES
    code = "from drwatch.observe.scheduler import phase_of; print(repr(phase_of('app:i-1', 5.0)))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert float(other.stdout) == PINNED_PHASES[("app:i-1", 5.0)]
    assert all(0 <= phase_of(f"k{i}", 5.0) < 5.0 for i in range(1000))


def test_start_is_spread_over_the_interval() -> None:
    """10,000 keys spread over the interval: no tenth of it holds much more than a tenth."""
    buckets = Counter(int(phase_of(f"app:i-{i:05d}", 5.0) / 0.5) for i in range(10_000))
    assert len(buckets) == 10
    assert max(buckets.values()) < 1_150


@pytest.mark.parametrize(("now", "missed"), [(1000.5, 0), (1001.0, 0), (1003.5, 3)])
def test_next_due_skips_missed_slots(now: float, missed: int) -> None:
    """A loop that fell behind skips the slots it missed instead of firing them in a burst."""
    nxt, got = next_due(1000.0, 1.0, now)
    assert got == missed
    assert nxt >= now
    assert (nxt - 1000.0) % 1.0 == 0


async def test_fixed_rate_at_the_keys_phase(start: Start) -> None:
    """A job fires once per interval at phase + k * interval, however long its checks take."""
    clock = FakeClock()
    rec = Recorder(clock)
    sched = make(clock, rec)
    start(sched)
    sched.set_jobs({"a": rec.job("a", interval=1.0)})
    due = first_due("a", 1.0, 1000.0)
    fired_at = []
    for k in range(5):
        clock.now = due + k * 1.0
        sched.fire_due(clock.now)
        await settle()
        fired_at.append(clock.now)
        # finished, the job is back on the heap at its next slot
        assert sched.fire_due(clock.now) == pytest.approx(due + (k + 1) * 1.0)
    assert [t for _, t in rec.starts] == fired_at
    assert len(rec.results) == 5


async def test_one_in_flight_per_job_and_skips_counted(start: Start) -> None:
    """A check still running when its next slot comes makes that slot a skip; it runs again
    at the first slot after it finished."""
    clock = FakeClock()
    rec = Recorder(clock)
    rec.hold["slow"] = asyncio.Event()
    sched = make(clock, rec)
    start(sched)
    sched.set_jobs({"slow": rec.job("slow"), "fast": rec.job("fast")})
    await step_until(sched, clock, 1003.0)
    starts = Counter(k for k, _ in rec.starts)
    assert starts["slow"] == 1
    assert starts["fast"] == 3
    assert sched.lag_stats().in_flight == 1
    rec.hold["slow"].set()
    await settle()
    assert sched.lag_stats().skipped == 2
    await step_until(sched, clock, 1004.0)
    assert Counter(k for k, _ in rec.starts)["slow"] == 2


async def test_set_jobs_keeps_phase_adds_and_removes(start: Start) -> None:
    """Replacing the job set keeps unchanged keys on their slots, starts new keys at their
    phase and stops removed keys."""
    clock = FakeClock()
    rec = Recorder(clock)
    sched = make(clock, rec)
    start(sched)
    sched.set_jobs({"a": rec.job("a"), "b": rec.job("b")})
    await step_until(sched, clock, 1002.0)
    sched.set_jobs({"a": rec.job("a"), "c": rec.job("c")})  # new closures, same keys
    await step_until(sched, clock, 1005.0)
    by_key: dict[str, list[float]] = {}
    for key, t in rec.starts:
        by_key.setdefault(key, []).append(t)
    # a keeps one start per interval, in the same 50 ms step of each second
    a_phase = {round((t - 1000.0) % 1.0, 2) for t in by_key["a"]}
    assert len(by_key["a"]) == 5
    assert len(a_phase) == 1
    assert all(t <= 1002.0 for t in by_key["b"])
    assert len(by_key["c"]) == 3
    assert set(sched.jobs()) == {"a", "c"}


async def test_changed_interval_reschedules(start: Start) -> None:
    """A key whose interval changed runs at the new rate and not twice per slot."""
    clock = FakeClock()
    rec = Recorder(clock)
    sched = make(clock, rec)
    start(sched)
    sched.set_jobs({"a": rec.job("a", interval=1.0)})
    await step_until(sched, clock, 1002.0)
    before = len(rec.starts)
    sched.set_jobs({"a": rec.job("a", interval=0.5)})
    await step_until(sched, clock, 1004.0)
    assert len(rec.starts) - before == 4


async def test_exception_becomes_unknown_logged_once(start: Start) -> None:
    """A check that raises yields UNKNOWN observations; the failure is logged once, and
    its end is logged once too."""
    clock = FakeClock()
    results: list[Observation] = []
    sched = CheckScheduler(4, results.append, clock=clock)
    start(sched)
    calls = 0

    async def run() -> Observation:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("boom")
        return Observation("t", Layer.CANARY, Health.UP, attempted_at=0.0)

    sched.set_jobs({"x": CheckJob("x", 1.0, 0.5, run, Layer.CANARY, "t")})
    with capture_logs() as logs:
        await step_until(sched, clock, 1004.0)
    assert [o.health for o in results] == [Health.UNKNOWN] * 3 + [Health.UP]
    assert results[0].reason == "check failed: RuntimeError"
    assert (results[0].target, results[0].layer) == ("t", Layer.CANARY)
    assert [e["event"] for e in logs] == ["check.failed", "check.recovered"]
    assert sched.lag_stats().errors == 3


async def test_deadline_gives_unknown_timeout(start: Start) -> None:
    """A check past its deadline is cancelled and reported UNKNOWN "timeout after ..."."""
    results: list[Observation] = []
    sched = CheckScheduler(4, results.append)
    start(sched)
    never = asyncio.Event()

    async def run() -> Observation:
        await never.wait()
        raise AssertionError("unreachable")

    sched.set_jobs({"h": CheckJob("h", 60.0, 0.02, run, Layer.APP, "i-h")})
    sched.fire_due(sched_due("h", 60.0))
    await wait_for(lambda: bool(results))
    assert results[0].health is Health.UNKNOWN
    assert results[0].reason == "timeout after 0.02s"
    assert sched.lag_stats().timeouts == 1


def sched_due(key: str, interval: float) -> float:
    return first_due(key, interval, time.monotonic())


async def wait_for(cond: Callable[[], bool], deadline_s: float = 10.0) -> None:
    """Poll `cond` until it holds; the deadline only guards against a hang."""
    async with asyncio.timeout(deadline_s):
        while True:
            if cond():
                return
            await asyncio.sleep(0.005)


async def test_sink_error_does_not_stop_checks(start: Start) -> None:
    """An on_result callback that raises is logged once; later results are still delivered."""
    clock = FakeClock()
    rec = Recorder(clock)
    seen: list[Observation] = []

    def sink(o: Observation) -> None:
        seen.append(o)
        if len(seen) <= 2:
            raise ValueError("sink bug")

    sched = CheckScheduler(2, sink, clock=clock)
    start(sched)
    sched.set_jobs({"a": rec.job("a")})
    with capture_logs() as logs:
        await step_until(sched, clock, 1003.0)
    assert len(seen) == 3
    assert [e["event"] for e in logs] == ["check.sink_failed"]


async def test_concurrency_bound_and_lag_recorded(start: Start) -> None:
    """No more checks run at once than the concurrency; waiting for a slot shows as lag."""
    clock = FakeClock()
    rec = Recorder(clock)
    sched = make(clock, rec, concurrency=2)
    start(sched)
    for k in ("a", "b", "c"):
        rec.hold[k] = asyncio.Event()
    sched.set_jobs({k: rec.job(k, interval=10.0) for k in ("a", "b", "c")})
    await step_until(sched, clock, 1010.0)
    assert len(rec.starts) == 2
    first = {k for k, _ in rec.starts}
    clock.now += 0.25
    for k in first:
        rec.hold[k].set()
    await settle()
    assert len(rec.starts) == 3
    stats = sched.lag_stats()
    assert stats.started == 3
    assert stats.max >= 0.25


async def test_run_fires_and_cancel_cleans_up() -> None:
    """run() fires jobs on the real clock until cancelled, then cancels checks in flight."""
    results: list[Observation] = []
    sched = CheckScheduler(4, results.append)
    hang = asyncio.Event()
    starts: list[str] = []

    def job(key: str, hold: bool) -> CheckJob:
        async def run() -> Observation:
            starts.append(key)
            if hold:
                await hang.wait()
            return Observation(key, Layer.APP, Health.UP, attempted_at=0.0)

        return CheckJob(key, 0.02, 10.0, run, Layer.APP, key)

    sched.set_jobs({"fast": job("fast", False), "stuck": job("stuck", True)})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sched.run())
        # The stuck job holds its only slot; the fast one keeps its rate regardless.
        await wait_for(lambda: starts.count("fast") >= 5)
        assert starts.count("stuck") == 1
        assert sched.lag_stats().in_flight >= 1
        task.cancel()
    assert sched.lag_stats().in_flight == 0
    assert {o.target for o in results} == {"fast"}


async def test_check_that_swallows_cancel_loses_its_worker(start: Start) -> None:
    """A check that ignores its deadline's cancellation is reported UNKNOWN and replaced:
    with a single worker, the other job still runs."""
    results: list[Observation] = []
    sched = CheckScheduler(1, results.append)
    start(sched)
    release = asyncio.Event()
    starts: list[str] = []

    async def stubborn() -> Observation:
        starts.append("stubborn")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # refuses to stop when told
        starts.append("stubborn-returned")
        return Observation("s", Layer.APP, Health.UP, attempted_at=0.0)

    async def fine() -> Observation:
        starts.append("fine")
        return Observation("f", Layer.APP, Health.UP, attempted_at=0.0)

    sched.set_jobs(
        {
            "s": CheckJob("s", 60.0, 0.02, stubborn, Layer.APP, "s"),
            "f": CheckJob("f", 60.0, 1.0, fine, Layer.APP, "f"),
        }
    )
    sched.fire_due(sched_due("s", 60.0))
    await wait_for(lambda: "stubborn" in starts)
    sched.fire_due(max(sched_due("s", 60.0), sched_due("f", 60.0)))
    await wait_for(lambda: "fine" in starts and len(results) == 2)
    release.set()
    assert {(o.target, o.health, o.reason) for o in results} == {
        ("s", Health.UNKNOWN, "timeout after 0.02s"),
        ("f", Health.UP, ""),
    }
    await wait_for(lambda: "stubborn-returned" in starts)
    await settle()
    assert len(results) == 2  # the stubborn check's late answer is dropped
    assert sched.lag_stats().in_flight == 0


async def test_restart_after_cancel_checks_every_job_again() -> None:
    """A check cancelled with run() does not lose its job: a new run() checks it again."""
    results: list[Observation] = []
    sched = CheckScheduler(2, results.append)
    release = asyncio.Event()
    starts: list[str] = []

    async def run() -> Observation:
        starts.append("x")
        await release.wait()
        return Observation("x", Layer.APP, Health.UP, attempted_at=0.0)

    sched.set_jobs({"x": CheckJob("x", 0.05, 10.0, run, Layer.APP, "x")})
    first = asyncio.create_task(sched.run())
    await wait_for(lambda: len(starts) == 1)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    release.set()
    second = asyncio.create_task(sched.run())
    try:
        await wait_for(lambda: len(results) >= 1)
    finally:
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
    assert len(starts) >= 2
    assert results[0].health is Health.UP
