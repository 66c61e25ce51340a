"""The alerter: turns the current list of alerts into deliveries, off the loop's path.

`update()` is synchronous and cheap: it diffs the list against what is active and
offers the changes to each receiver's pending set. Each receiver has its own task
that drains that set, retries with backoff while the receiver fails, and counts every
outcome. The pending set is keyed by alert, so while a receiver is down the newest
state of each alert waits (a resolution replaces the firing it ends) and the set stays
bounded by `queue_size`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, Self

import aiohttp

from drwatch.alerts.model import AlertInput, LabelSet, Outgoing
from drwatch.alerts.sinks import AlertmanagerSink, DeliveryError, Sink, WebhookSink
from drwatch.config import AlertsConfig
from drwatch.logs import get_logger

log = get_logger(component="alerts")

# Alertmanager keeps an alert firing until endsAt: this many resend intervals ahead,
# so two lost resends do not resolve an alert that is still active.
ENDS_AHEAD_INTERVALS = 4
# How long aclose() waits for a last delivery of what is pending.
CLOSE_FLUSH_S = 2.0


class AlertMetrics(Protocol):
    def alert_delivered(self, receiver: str) -> None: ...
    def alert_failed(self, receiver: str) -> None: ...
    def alert_dropped_batch(self, receiver: str) -> None: ...


class NullAlertMetrics:
    def alert_delivered(self, receiver: str) -> None:
        pass

    def alert_failed(self, receiver: str) -> None:
        pass

    def alert_dropped_batch(self, receiver: str) -> None:
        pass


class _Receiver:
    """One sink, its pending alerts, and the task that delivers them."""

    def __init__(self, sink: Sink, alerter: Alerter) -> None:
        self.sink = sink
        self._alerter = alerter
        self.pending: dict[LabelSet, Outgoing] = {}
        self.wake = asyncio.Event()
        self.failing = False

    def offer(self, items: Iterable[Outgoing], *, keep_newer: bool = False) -> None:
        limit = self._alerter.queue_size
        for item in items:
            if keep_newer and item.key in self.pending:
                continue
            if item.key not in self.pending and len(self.pending) >= limit:
                self._alerter.metrics.alert_dropped_batch(self.sink.name)
                continue
            self.pending[item.key] = item
        if self.pending:
            self.wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        delay = self._alerter.retry_min
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, {}
            if not batch:
                continue
            if await self.deliver(session, list(batch.values())):
                delay = self._alerter.retry_min
                continue
            # Put the batch back behind anything newer that arrived meanwhile.
            self.offer(batch.values(), keep_newer=True)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._alerter.retry_max)

    async def deliver(self, session: aiohttp.ClientSession, batch: list[Outgoing]) -> bool:
        name = self.sink.name
        try:
            async with asyncio.timeout(self._alerter.timeout):
                await self.sink.send(session, batch)
        except (DeliveryError, TimeoutError) as err:
            self._alerter.metrics.alert_failed(name)
            if not self.failing:
                log.warning("alert.delivery_failed", receiver=name, error=str(err) or "timeout")
            self.failing = True
            return False
        self._alerter.metrics.alert_delivered(name)
        if self.failing:
            log.info("alert.delivery_recovered", receiver=name)
        self.failing = False
        return True


class Alerter:
    """Keeps receivers in step with the list of active alerts. Use `async with`."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        resend_interval: float = 60.0,
        timeout: float = 5.0,
        external_url: str = "",
        queue_size: int = 1000,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.resend_interval = resend_interval
        self.timeout = timeout
        self.external_url = external_url.rstrip("/")
        self.queue_size = queue_size
        self.metrics: AlertMetrics = metrics or NullAlertMetrics()
        self.retry_min, self.retry_max = retry_min, min(retry_max, resend_interval)
        self._clock = clock
        self._receivers = [_Receiver(s, self) for s in sinks]
        self._active: dict[LabelSet, AlertInput] = {}
        self._last_resend = float("-inf")
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, cfg: AlertsConfig, metrics: AlertMetrics | None = None) -> Self:
        """Receivers named `alertmanager-1..N` (in config order) and `webhook`."""
        sinks: list[Sink] = [
            AlertmanagerSink(f"alertmanager-{i}", url)
            for i, url in enumerate(cfg.alertmanager_urls, start=1)
        ]
        if cfg.webhook_url:
            sinks.append(WebhookSink("webhook", cfg.webhook_url))
        return cls(
            sinks,
            resend_interval=cfg.resend_interval,
            timeout=cfg.timeout,
            external_url=cfg.external_url or "",
            queue_size=cfg.queue_size,
            metrics=metrics,
        )

    @property
    def active(self) -> tuple[AlertInput, ...]:
        return tuple(self._active.values())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the HTTP session and start one delivery task per receiver."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._tasks = [
            asyncio.create_task(r.run(self._session), name=f"alerts.{r.sink.name}")
            for r in self._receivers
        ]

    async def aclose(self) -> None:
        """Stop the delivery tasks, try one bounded last delivery of what waits, close."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is None:
            return
        session, self._session = self._session, None
        try:
            async with asyncio.timeout(CLOSE_FLUSH_S):
                await asyncio.gather(*(self._flush(r, session) for r in self._receivers))
        except TimeoutError:
            log.warning("alert.flush_timeout")
        finally:
            await session.close()

    @staticmethod
    async def _flush(receiver: _Receiver, session: aiohttp.ClientSession) -> None:
        batch, receiver.pending = list(receiver.pending.values()), {}
        if batch:
            await receiver.deliver(session, batch)

    def update(self, alerts: Iterable[AlertInput], now: float | None = None) -> None:
        """Make the receivers see exactly `alerts` as firing. Never blocks, never raises."""
        now = self._clock() if now is None else now
        current = {a.key: a for a in alerts}
        resolved = [a for k, a in self._active.items() if k not in current]
        changed = [a for k, a in current.items() if self._active.get(k) != a]
        for a in changed:
            # A new alert is a transition; a changed summary (a step finished) is not.
            if a.key not in self._active:
                log.info("alert.firing", alertname=a.alertname, incident=a.incident_id)
        self._active = current
        for a in resolved:
            log.info("alert.resolved", alertname=a.alertname, incident=a.incident_id)
        fired = [self._outgoing(a, now, resolved=False) for a in changed]
        ended = [self._outgoing(a, now, resolved=True) for a in resolved]
        resend = self._resend_due(now)
        for r in self._receivers:
            if resend is not None and r.sink.wants_resends:
                r.offer([*resend, *ended])
            else:
                r.offer([*fired, *ended])

    def _resend_due(self, now: float) -> list[Outgoing] | None:
        """Every active alert, when the resend interval has passed; else None."""
        if now - self._last_resend < self.resend_interval:
            return None
        self._last_resend = now
        return [self._outgoing(a, now, resolved=False) for a in self._active.values()]

    def _outgoing(self, alert: AlertInput, now: float, *, resolved: bool) -> Outgoing:
        ends = now if resolved else now + ENDS_AHEAD_INTERVALS * self.resend_interval
        link = self._link(alert)
        return Outgoing(alert.key, alert.payload(ends, link), resolved)

    def _link(self, alert: AlertInput) -> str:
        if not self.external_url:
            return ""
        if alert.incident_id:
            return f"{self.external_url}/#incident-{alert.incident_id}"
        return f"{self.external_url}/"
