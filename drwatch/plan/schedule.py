"""Live drills on the calendar: `[[plan.live_drills]]`, run by the daemon on APScheduler.

Each run is the same guarded live drill as `drwatch drill --live`: the guards are
checked at the moment it fires against the daemon's own status, with the schedule's
standing approval (`approved_by`). A refused run is recorded in the ledger as a failed
drill whose violations are the reasons, so a schedule that never gets to run shows up
as overdue rather than as silence.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drwatch.config import Config, LiveDrillSchedule
from drwatch.errors import ConfigError
from drwatch.ledger import record_report
from drwatch.logs import get_logger
from drwatch.plan import live
from drwatch.tomlconfig import read_toml

Status = Callable[[], Mapping[str, Any]]
Run = Callable[[LiveDrillSchedule], Awaitable[None]]


def _log() -> Any:
    return get_logger(component="live_drills")


def trigger(spec: LiveDrillSchedule) -> CronTrigger | IntervalTrigger:
    if spec.cron is not None:
        return CronTrigger.from_crontab(spec.cron, timezone="UTC")
    assert spec.every is not None
    return IntervalTrigger(seconds=spec.every, timezone="UTC")


class LiveDrillScheduler:
    """Owns an AsyncIOScheduler with one job per scheduled live drill."""

    def __init__(self, specs: list[LiveDrillSchedule], run: Run) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        for i, spec in enumerate(specs):
            self.scheduler.add_job(
                run,
                trigger(spec),
                args=[spec],
                id=f"live-drill-{i}",
                max_instances=1,  # a drill still running is never started twice
                coalesce=True,  # a watcher that was down runs a missed drill once
                misfire_grace_time=3600,
            )

    def start(self) -> None:
        """Inside the running loop (APScheduler's asyncio scheduler needs it)."""
        if self.scheduler.get_jobs():
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)


def refused_report(name: str, reasons: list[str], now: float) -> dict[str, Any]:
    return {
        "scenario": name,
        "kind": "live",
        "passed": False,
        "started_at": now,
        "ended_at_s": 0.0,
        "incidents": [],
        "violations": [f"refused: {r}" for r in reasons],
    }


async def run_scheduled(
    cfg: Config,
    spec: LiveDrillSchedule,
    *,
    status: Status,
    api_url: str,
    provider: Any,
    session: Any,
) -> dict[str, Any]:
    """One scheduled live drill: guard, run, record. Returns the report it recorded."""
    log = _log().bind(scenario=str(spec.scenario), approved_by=spec.approved_by)
    try:
        sc = live.parse_live(read_toml(spec.scenario))
    except ConfigError as err:
        report = refused_report(str(spec.scenario), list(err.problems), time.time())
    else:
        doc = status()
        reasons = live.refusals(cfg, sc, doc, spec.approved_by)
        if reasons:
            report = refused_report(sc.name, reasons, time.time())
        else:
            log.info("live_drill.start")
            report = await live.run_live(
                cfg, sc, api_url=api_url, provider=provider, session=session, status=doc
            )
    rec = record_report(cfg.watcher.state_dir, report, "live", by=spec.approved_by)
    log.info(
        "live_drill.recorded", drill=rec.id, result=rec.result, violations=list(rec.violations)
    )
    return report
