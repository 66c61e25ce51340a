"""AwsProvider translates every way the API can fail, seen through a front before moto.

The front is a loopback aiohttp server: it answers the first requests with scripted
failures (throttling, 5xx, HTML, silence) and forwards the rest to a real moto_server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import ClientError, NoCredentialsError

from drwatch.config import ProviderConfig
from drwatch.errors import (
    ProviderError,
    ProviderThrottledError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from drwatch.providers.aws import AwsProvider, translate
from tests.conftest import MotoServer
from tests.support.services import free_port

pytestmark = pytest.mark.services

US = "us-east-1"
THROTTLE = (
    503,
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    "<Message>Request limit exceeded.</Message></Error></Errors>"
    "<RequestID>r1</RequestID></Response>",
)
INTERNAL = (
    500,
    "<Response><Errors><Error><Code>InternalError</Code>"
    "<Message>An internal error has occurred</Message></Error></Errors>"
    "<RequestID>r2</RequestID></Response>",
)
HTML_500 = (500, "<!doctype html><html><body><h1>Internal Server Error</h1></body></html>")
HANG = (0, "")


@dataclass
class Front:
    """Scripted answers first (`script`), then moto. `seen` counts requests."""

    url: str
    moto_url: str
    script: list[tuple[int, str]] = field(default_factory=list)
    forever: tuple[int, str] | None = None
    seen: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        scripted = self.script.pop(0) if self.script else self.forever
        body = await request.read()
        if scripted == HANG:
            async with asyncio.timeout(30):
                await self.release.wait()
        if scripted is not None:
            status, text = scripted
            return web.Response(status=status, text=text, content_type="text/xml")
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self.moto_url + "/", data=body, headers=headers) as resp,
        ):
            payload = await resp.read()
            return web.Response(status=resp.status, body=payload, content_type="text/xml")


@pytest.fixture
async def front(moto: MotoServer) -> AsyncIterator[Front]:
    port = free_port()
    f = Front(url=f"http://127.0.0.1:{port}", moto_url=moto.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", f.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f
    finally:
        f.release.set()
        await runner.cleanup()


def provider(url: str, **kwargs: Any) -> AwsProvider:
    return AwsProvider(ProviderConfig(regions=[US], endpoints={US: url}), **kwargs)


async def test_throttled_calls_are_retried_with_backoff(front: Front) -> None:
    """Two throttled answers, then moto's: the call succeeds after backing off twice."""
    front.script = [THROTTLE, THROTTLE]
    slept: list[float] = []

    async def record(delay: float) -> None:
        slept.append(delay)

    async with provider(front.url, throttle_budget=30.0, sleep=record) as aws:
        zones = await aws.zones(US)
    assert zones
    assert front.seen == 3
    assert len(slept) == 2


async def test_throttling_beyond_the_budget_raises_throttled(front: Front) -> None:
    """A region that keeps throttling gives ProviderThrottledError once the budget is spent."""
    front.forever = THROTTLE
    # The budget is read on an injected clock that only the backoff sleeps advance, so a
    # slow first answer on a loaded machine cannot spend it (it did, once, in a full run).
    now = [0.0]
    slept: list[float] = []

    async def advance(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    async with provider(front.url, throttle_budget=0.5, sleep=advance, clock=lambda: now[0]) as aws:
        with pytest.raises(ProviderThrottledError) as err:
            await aws.ping(US)
    assert err.value.code == "RequestLimitExceeded"
    assert front.seen == len(slept) + 1 >= 2
    assert sum(slept) <= 0.5


async def test_server_error_is_retryable_provider_error_without_silent_retry(front: Front) -> None:
    """A 500 InternalError is a retryable ProviderError, and botocore did not retry it."""
    front.script = [INTERNAL]
    async with provider(front.url) as aws:
        with pytest.raises(ProviderError) as err:
            await aws.ping(US)
    assert (err.value.code, err.value.retryable) == ("InternalError", True)
    assert not isinstance(err.value, ProviderUnreachableError)
    assert front.seen == 1


async def test_html_500_is_a_provider_error(front: Front) -> None:
    """An HTML 500 (what moto sends for an unimplemented action) is a ProviderError."""
    front.script = [HTML_500]
    async with provider(front.url) as aws:
        with pytest.raises(ProviderError) as err:
            await aws.instances(US)
    assert (err.value.code, err.value.retryable) == ("ResponseParserError", True)
    assert not isinstance(err.value, ProviderUnreachableError)


async def test_silence_is_a_timeout(front: Front) -> None:
    """An endpoint that accepts and never answers gives ProviderTimeoutError."""
    front.script = [HANG]
    async with provider(front.url, read_timeout=0.3) as aws:
        with pytest.raises(ProviderTimeoutError):
            await aws.ping(US)


async def test_refused_connection_is_unreachable_not_timeout() -> None:
    """Nothing listening: ProviderUnreachableError, and not a timeout."""
    async with provider(f"http://127.0.0.1:{free_port()}") as aws:
        with pytest.raises(ProviderUnreachableError) as err:
            await aws.ping(US)
    assert not isinstance(err.value, ProviderTimeoutError)


async def test_unconfigured_region_is_refused() -> None:
    """A region outside the config is a ProviderError before any network call."""
    async with provider("http://127.0.0.1:1") as aws:
        with pytest.raises(ProviderError) as err:
            await aws.ping("ap-south-1")
    assert err.value.code == "UnknownRegion"


def test_translation_of_errors_without_a_server() -> None:
    """Throttling codes become ProviderThrottledError; missing credentials a clear code."""
    throttled = ClientError(
        {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DescribeInstances"
    )
    assert isinstance(translate(throttled, region=US, op="x"), ProviderThrottledError)
    creds = translate(NoCredentialsError(), region=US, op="describe_instances")
    assert creds.code == "NoCredentials"
    assert not creds.retryable
