"""The alerter against real local HTTP receivers: delivery, resends, resolution, failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from drwatch.alerts import Alerter, AlertInput, AlertmanagerSink, Sink, WebhookSink
from drwatch.config import AlertsConfig
from drwatch.web.metrics import Metrics
from tests.support.services import start_site

NOW = 1_800_000_000.0


class FakeReceiver:
    """An HTTP endpoint that records JSON bodies; it can fail or hang on demand."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.mode = "ok"
        self.port = 0  # bound in start()
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            await self._released.wait()
        if self.mode == "fail":
            return web.Response(status=500)
        self.bodies.append(await request.json())
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = await start_site(self._runner)

    @property
    def url(self) -> str:
        assert self.port, "start() the receiver first"
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self._runner is not None
        self._released.set()
        await self._runner.cleanup()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert received, flattened over Alertmanager lists and webhook envelopes."""
        out: list[dict[str, Any]] = []
        for body in self.bodies:
            out.extend(body["alerts"] if isinstance(body, dict) else body)
        return out


@pytest.fixture
async def receivers() -> AsyncIterator[list[FakeReceiver]]:
    fakes = [FakeReceiver() for _ in range(3)]
    for f in fakes:
        await f.start()
    yield fakes
    for f in fakes:
        await f.stop()


async def until(cond: Callable[[], bool], deadline: float = 10.0) -> None:
    """Poll `cond` until it holds; fail the test after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline}s")
        await asyncio.sleep(0.01)


def zone_alert(**changes: str) -> AlertInput:
    fields: dict[str, Any] = {
        "incident_id": "inc-7",
        "alertname": "DrwatchZoneOutage",
        "severity": "critical",
        "scope": "zone",
        "region": "us-east-1",
        "zone": "us-east-1b",
        "summary": "zone us-east-1b down (4 instances); replacing app-3, app-4 in us-east-1c",
        "started_at": NOW - 30,
    }
    fields.update(changes)
    return AlertInput(**fields)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _alerter(fakes: list[FakeReceiver], metrics: Metrics | None = None, **kw: Any) -> Alerter:
    sinks: list[Sink] = [
        AlertmanagerSink("alertmanager-1", fakes[0].url),
        AlertmanagerSink("alertmanager-2", fakes[1].url),
        WebhookSink("webhook", fakes[2].url + "/hook"),
    ]
    opts: dict[str, Any] = {"resend_interval": 60.0, "timeout": 0.5, "retry_min": 0.05}
    opts.update(kw)
    return Alerter(sinks, metrics=metrics, external_url="http://drwatch.example:9480", **opts)


async def test_alert_reaches_every_replica_with_labels(receivers: list[FakeReceiver]) -> None:
    """Each Alertmanager replica gets the alert: its labels, summary, link, endsAt ahead."""
    async with _alerter(receivers) as alerter:
        alerter.update([zone_alert()], now=NOW)
        await until(lambda: all(f.alerts() for f in receivers))
    for fake in receivers[:2]:
        (got,) = fake.alerts()
        assert got["labels"] == {
            "alertname": "DrwatchZoneOutage",
            "severity": "critical",
            "scope": "zone",
            "region": "us-east-1",
            "zone": "us-east-1b",
            "incident": "inc-7",
        }
        assert got["annotations"]["summary"].startswith("zone us-east-1b down")
        assert got["generatorURL"] == "http://drwatch.example:9480/#incident-inc-7"
        assert _epoch(got["startsAt"]) == NOW - 30
        assert _epoch(got["endsAt"]) == NOW + 4 * 60


async def test_resolution_sends_ends_at_now(receivers: list[FakeReceiver]) -> None:
    """When an alert leaves the list, every receiver gets it once more with endsAt = now."""
    async with _alerter(receivers) as alerter:
        alerter.update([zone_alert()], now=NOW)
        await until(lambda: all(len(f.alerts()) == 1 for f in receivers))
        alerter.update([], now=NOW + 5)
        await until(lambda: all(len(f.alerts()) == 2 for f in receivers))
    for fake in receivers[:2]:
        assert _epoch(fake.alerts()[1]["endsAt"]) == NOW + 5
    hook = receivers[2].alerts()
    assert [a["status"] for a in hook] == ["firing", "resolved"]


async def test_active_alerts_are_resent_to_alertmanager_only(
    receivers: list[FakeReceiver],
) -> None:
    """Alertmanager needs active alerts resent each interval; the webhook hears changes only."""
    async with _alerter(receivers, resend_interval=10.0) as alerter:
        alerter.update([zone_alert()], now=NOW)
        alerter.update([zone_alert()], now=NOW + 5)
        await until(lambda: all(len(f.alerts()) == 1 for f in receivers))
        alerter.update([zone_alert()], now=NOW + 11)
        await until(lambda: all(len(f.alerts()) == 2 for f in receivers[:2]))
        alerter.update([zone_alert(summary="recovered app-3; replacing app-4")], now=NOW + 12)
        await until(lambda: len(receivers[2].alerts()) == 2)
    assert _epoch(receivers[0].alerts()[1]["endsAt"]) == NOW + 11 + 40
    assert receivers[2].alerts()[1]["annotations"]["summary"].startswith("recovered app-3")


async def test_failing_receiver_is_retried_and_counted(receivers: list[FakeReceiver]) -> None:
    """A replica answering 500 is retried with backoff and counted; the others are unaffected."""
    metrics = Metrics(process_metrics=False)
    receivers[1].mode = "fail"
    async with _alerter(receivers, metrics) as alerter:
        alerter.update([zone_alert()], now=NOW)
        await until(lambda: len(receivers[0].alerts()) == 1 and len(receivers[2].alerts()) == 1)
        await until(lambda: _value(metrics, "alertmanager-2", "failures") >= 2)
        receivers[1].mode = "ok"
        await until(lambda: len(receivers[1].alerts()) == 1)
    assert _value(metrics, "alertmanager-1", "failures") == 0
    assert _value(metrics, "alertmanager-2", "deliveries") == 1


async def test_hanging_receiver_times_out_without_blocking(
    receivers: list[FakeReceiver],
) -> None:
    """A replica that never answers costs one timeout per attempt; the others still deliver."""
    metrics = Metrics(process_metrics=False)
    receivers[0].mode = "hang"
    async with _alerter(receivers, metrics, timeout=0.2) as alerter:
        alerter.update([zone_alert()], now=NOW)
        await until(lambda: len(receivers[1].alerts()) == 1)
        await until(lambda: _value(metrics, "alertmanager-1", "failures") >= 1)
        receivers[0].mode = "ok"
        alerter.update([], now=NOW + 1)
        await until(lambda: len(receivers[0].alerts()) >= 1)
    # While it hung, the firing was replaced by the resolution: only the newest state waits.
    assert _epoch(receivers[0].alerts()[-1]["endsAt"]) == NOW + 1


async def test_pending_alerts_are_bounded(receivers: list[FakeReceiver]) -> None:
    """While a receiver is down, at most queue_size alerts wait; the rest are counted dropped."""
    metrics = Metrics(process_metrics=False)
    receivers[0].mode = "fail"
    async with _alerter(receivers, metrics, queue_size=10, retry_min=5.0) as alerter:
        alerter.update([zone_alert(incident_id=f"inc-{i}") for i in range(25)], now=NOW)
        await until(lambda: _value(metrics, "alertmanager-1", "failures") >= 1)
        assert _value(metrics, "alertmanager-1", "dropped") == 15
        receivers[0].mode = "ok"


def test_from_config_names_receivers() -> None:
    """Receivers are named alertmanager-1..N in config order, then webhook (metric labels)."""
    cfg = AlertsConfig(
        alertmanager_urls=["http://am-a:9093", "http://am-b:9093/"],
        webhook_url="http://hooks:8080/drwatch",
        resend_interval=30.0,
    )
    alerter = Alerter.from_config(cfg)
    names = [r.sink.name for r in alerter._receivers]
    assert names == ["alertmanager-1", "alertmanager-2", "webhook"]


def _value(metrics: Metrics, receiver: str, what: str) -> float:
    counter = {
        "deliveries": metrics.alerts.deliveries,
        "failures": metrics.alerts.failures,
        "dropped": metrics.alerts.dropped,
    }[what]
    return float(counter.labels(receiver)._value.get())


def test_watcher_alert_labels() -> None:
    """drwatch's own alert carries scope=watcher and no incident label."""
    from drwatch.alerts import watcher_impaired_alert

    alert = watcher_impaired_alert("drwatch-1", "canaries fail: not acting", NOW)
    assert alert.labels == {
        "alertname": "DrwatchWatcherImpaired",
        "severity": "warning",
        "scope": "watcher",
    }
    assert json.dumps(alert.payload(NOW, ""))


def test_alert_for_incident_says_what_drwatch_does() -> None:
    """An incident becomes a scope-graded alert whose summary says what drwatch is doing."""
    from drwatch.alerts import alert_for_incident
    from tests.support.operator_world import DB_INC, ZONE_INC, incidents

    by_id = {i.id: alert_for_incident(i) for i in incidents()}
    zone = by_id[ZONE_INC]
    assert zone.labels == {
        "alertname": "DrwatchZoneOutage",
        "severity": "critical",
        "scope": "zone",
        "role": "app_server,database,load_balancer",
        "region": "us-east-1",
        "zone": "us-east-1b",
        "incident": ZONE_INC,
    }
    assert zone.summary == (
        "zone us-east-1b: zone outage (app-3, app-4, db-2, lb-2); "
        "drwatch is running app_server.replace (step 3/4 done)"
    )
    db = by_id[DB_INC]
    assert db.alertname == "DrwatchInstanceDown"
    assert db.summary.endswith(
        f"waiting for approval to run database.recover: `drwatch approve {DB_INC}`"
    )


def test_a_lost_standby_region_has_its_own_alert() -> None:
    """DR capacity lost is a region incident (its scope label still mutes the zone and
    instance alerts inside it) with its own alert name, graded a warning: the service
    is fine, its regional fallback is not."""
    from drwatch.alerts import alert_for_incident
    from drwatch.model.findings import Finding, Severity
    from drwatch.model.incident import Incident, Phase
    from drwatch.model.plan import Scope

    inc = Incident(
        id="inc-dr",
        scope=Scope.REGION,
        scope_key="region:eu-west-1",
        finding=Finding.DR_CAPACITY_LOST,
        severity=Severity.ALERT,
        region="eu-west-1",
        zone="",
        roles=("app_server", "database", "load_balancer"),
        groups=("app-eu", "db-eu", "lb-eu"),
        target_ids=("i-1", "i-2", "i-3"),
        target_names=("app-eu-1", "db-3", "lb-eu-1"),
        opened_at=1.0,
        updated_at=1.0,
        phase=Phase.DETECTED_ONLY,
    )
    alert = alert_for_incident(inc)
    assert (alert.alertname, alert.severity, alert.labels["scope"]) == (
        "DrwatchDrCapacityLost",
        "warning",
        "region",
    )
    assert alert.summary.startswith("region eu-west-1: dr capacity lost (app-eu-1, db-3, lb-eu-1)")
