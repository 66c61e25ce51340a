"""Receivers: where a batch of alert payloads goes. HTTP errors become `DeliveryError` here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import aiohttp

from drwatch.alerts.model import Outgoing
from drwatch.errors import DrwatchError


class DeliveryError(DrwatchError):
    """A receiver did not accept a batch. The message is short and carries no secrets."""


class Sink(Protocol):
    """Something that accepts a batch of alert payloads, or raises DeliveryError."""

    name: str
    # Alertmanager forgets an alert at endsAt: it needs active alerts sent again.
    wants_resends: bool

    async def send(self, session: aiohttp.ClientSession, alerts: Sequence[Outgoing]) -> None:
        """Deliver the batch. The caller bounds the time."""
        ...


async def _post_json(session: aiohttp.ClientSession, url: str, body: object) -> None:
    try:
        async with session.post(url, json=body) as resp:
            if resp.status >= 300:
                raise DeliveryError(f"HTTP {resp.status}")
    except aiohttp.ClientError as err:
        raise DeliveryError(type(err).__name__) from None


class AlertmanagerSink:
    """One Alertmanager replica: `POST {url}/api/v2/alerts` with a list of alerts."""

    wants_resends = True

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/api/v2/alerts"

    async def send(self, session: aiohttp.ClientSession, alerts: Sequence[Outgoing]) -> None:
        await _post_json(session, self.url, [a.payload for a in alerts])


class WebhookSink:
    """A generic JSON webhook: `{"receiver", "alerts": [{status, labels, ...}]}` on changes."""

    wants_resends = False

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    async def send(self, session: aiohttp.ClientSession, alerts: Sequence[Outgoing]) -> None:
        body = [{"status": "resolved" if a.resolved else "firing", **a.payload} for a in alerts]
        await _post_json(session, self.url, {"receiver": "drwatch", "alerts": body})
