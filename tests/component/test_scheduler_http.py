"""The scheduler, the app observer and the health store together, over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from drwatch.config import AppCheck, GroupConfig, LayerTiming, Selector
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.app import AppObserver
from drwatch.observe.scheduler import CheckScheduler
from drwatch.observe.store import HealthStore
from drwatch.probes import HttpProbe, TcpProbe, new_session
from tests.support.services import start_site


async def _until(cond: Callable[[], bool], deadline_s: float = 20.0) -> None:
    """Poll `cond` until it holds; the deadline only guards against a hang."""
    async with asyncio.timeout(deadline_s):
        while True:
            if cond():
                return
            await asyncio.sleep(0.01)


def _instance(iid: str, port: int) -> Instance:
    return Instance(
        id=iid,
        name=iid,
        region="us-east-1",
        zone="us-east-1a",
        role=Role.APP_SERVER,
        group="app",
        tags=(("drwatch:app-addr", f"127.0.0.1:{port}"),),
    )


async def test_hanging_target_delays_no_other_and_goes_unknown() -> None:
    """One app hangs, one answers 500, one is fine: each gets its own debounced health, and
    the hanging one never holds back the others' checks."""
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500)

    runners = []
    ports = {}
    for name, handler in (("hang", hang), ("ok", ok), ("fail", fail)):
        app = web.Application()
        app.router.add_get("/health", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.2)
        await runner.setup()
        ports[name] = await start_site(runner)
        runners.append(runner)

    timing = LayerTiming(interval=0.25, timeout=0.2, rise=2, fall=2)
    group = GroupConfig(
        name="app",
        role=Role.APP_SERVER,
        select=Selector(tags={"role": "app"}),
        checks=[AppCheck(port=1, path="/health")],
    )
    fleet = Fleet(tuple(_instance(f"i-{n}", p) for n, p in ports.items()))
    store = HealthStore({Layer.APP: (timing.rise, timing.fall)})
    seen: Counter[str] = Counter()

    def sink(obs: Observation) -> None:
        seen[obs.target] += 1
        store.record(obs)

    session = new_session(limit=10)
    try:
        observer = AppObserver([group], timing, HttpProbe(session), TcpProbe())
        sched = CheckScheduler(concurrency=10, on_result=sink)
        sched.set_jobs(observer.jobs_for(fleet))
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sched.run())
            await _until(lambda: seen["i-ok"] >= 4 and seen["i-hang"] >= 2)
            task.cancel()
        snap = store.snapshot(fleet, now=0.0)
    finally:
        release.set()
        await session.close()
        for runner in runners:
            await runner.cleanup()
    health = {iid: snap.get(iid, Layer.APP) for iid in ("i-ok", "i-fail", "i-hang")}
    assert {k: v.health for k, v in health.items() if v} == {
        "i-ok": Health.UP,
        "i-fail": Health.DOWN,
        "i-hang": Health.UNKNOWN,
    }
    assert health["i-hang"] is not None
    assert health["i-hang"].reason == "timeout after 0.2s"
    assert health["i-fail"] is not None
    assert health["i-fail"].reason == "status 500, want 200"
