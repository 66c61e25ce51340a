"""The incident store's writes leave the event loop: a store stuck in its fsync does not
stall the probes, and no plan is submitted before its "acting" record is on disk."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle
from drwatch.incidents import IncidentStore, IncidentWriter, Writes
from drwatch.model.incident import Phase
from drwatch.model.observation import Health
from drwatch.probes import HttpConditions, HttpProbe, new_session
from tests.scenarios.world import NOW, World
from tests.support.services import start_site
from tests.unit.test_cycle import FakeRunner

DEADLINE_S = 30.0


class StuckStore(IncidentStore):
    """A store whose writes block (as on a disk that stalls its fsync) until released."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self._loop = asyncio.get_running_loop()
        self.entered = asyncio.Event()  # set (on the loop) once a write is stuck
        self.release = threading.Event()
        self.writer_threads: set[str] = set()

    def write(self, writes: Writes) -> frozenset[str]:
        if writes:
            self.writer_threads.add(threading.current_thread().name)
            self._loop.call_soon_threadsafe(self.entered.set)
            if not self.release.wait(DEADLINE_S):
                raise TimeoutError("the test never released the store")
        return super().write(writes)


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_stuck_store_write_does_not_stall_a_probe(tmp_path: Path) -> None:
    """While the tick's write is stuck, an HTTP probe on the same loop runs to its end;
    the plan waits for the write; once released, the tick submits it and the record on
    disk says acting."""
    store = StuckStore(tmp_path)
    runner = FakeRunner()
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, runner, NOW - 3600)
    writer = IncidentWriter(store)
    app = web.Application()
    app.router.add_get("/healthz", _ok)
    site = web.AppRunner(app, shutdown_timeout=0.5)
    await site.setup()
    port = await start_site(site)
    session = new_session(limit=4)
    snapshot = World.healthy().stop("app-3").snapshot()
    tick = asyncio.create_task(cycle.run_tick(snapshot, NOW, writer.write))
    try:
        await asyncio.wait_for(store.entered.wait(), DEADLINE_S)
        probe = await HttpProbe(session).check(
            f"http://127.0.0.1:{port}/healthz", HttpConditions(), 5.0
        )
        assert probe.health is Health.UP
        assert not tick.done()
        assert runner.submitted == []  # not before "acting" is on disk
        store.release.set()
        async with asyncio.timeout(DEADLINE_S):
            report = await tick
    finally:
        store.release.set()
        await session.close()
        await site.cleanup()
        writer.close()
    assert [p.playbook.value for p in runner.submitted] == ["app_server.replace"]
    (inc,) = report.open_incidents
    saved = store.get(inc.id)
    assert saved is not None
    assert saved.phase is Phase.ACTING
    assert store.writer_threads  # every write ran in the writer's thread, none on the loop
    assert all(name.startswith("incident-writer") for name in store.writer_threads)


async def test_the_writer_writes_in_order_and_survives_a_cancelled_caller(
    tmp_path: Path,
) -> None:
    """A caller cancelled while its write is in flight does not cancel the write: it
    completes (the record is on disk), and the next write follows it."""
    store = StuckStore(tmp_path)
    writer = IncidentWriter(store)
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, FakeRunner(), NOW - 3600)
    snapshot = World.healthy().stop("app-3").snapshot()
    tick = asyncio.create_task(cycle.run_tick(snapshot, NOW, writer.write))
    try:
        await asyncio.wait_for(store.entered.wait(), DEADLINE_S)
        tick.cancel()
        store.release.set()
        await asyncio.gather(tick, return_exceptions=True)
        await writer.write(Writes())  # nothing to write: returns at once
    finally:
        store.release.set()
        writer.close()  # waits for the write in flight
    assert tick.cancelled()
    (inc,) = store.open_incidents()
    assert inc.target_names == ("app-3",)


async def test_an_approval_during_the_write_is_kept_and_its_plan_waits(tmp_path: Path) -> None:
    """An operator's write to an incident while the tick's write is stuck (the API's
    approve) is not overwritten by the tick's older view, and the plan the tick meant to
    submit for that incident is not submitted: the next tick decides from the record."""
    store = StuckStore(tmp_path)
    runner = FakeRunner()
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, runner, NOW - 3600)
    snapshot = World.healthy().stop("app-3").snapshot()
    store.release.set()
    cycle.pause(NOW)
    (blocked,) = cycle.tick(snapshot, NOW).open_incidents
    assert blocked.phase is Phase.BLOCKED
    cycle.resume(NOW + 1)
    store.release.clear()
    store.entered.clear()
    writer = IncidentWriter(store)
    tick = asyncio.create_task(cycle.run_tick(snapshot, NOW + 2, writer.write))
    try:
        await asyncio.wait_for(store.entered.wait(), DEADLINE_S)
        operator = blocked.with_(updated_at=NOW + 2.5, detail="touched by the operator")
        store.save(operator)  # as the API's approve would, on the loop, meanwhile
        store.release.set()
        async with asyncio.timeout(DEADLINE_S):
            await tick
    finally:
        store.release.set()
        writer.close()
    assert runner.submitted == []
    assert store.get(blocked.id) == operator
    report = cycle.tick(snapshot, NOW + 3)  # the next tick decides from the stored record
    assert [p.playbook.value for p in runner.submitted] == ["app_server.replace"]
    assert report.open_incidents[0].detail == "touched by the operator"
