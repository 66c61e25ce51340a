"""The API bounds and validates what it is sent: bodies, query strings and path ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drwatch.web.api import add_routes
from tests.component.test_api import AUTH, TOKEN, make_state

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    app = web.Application()
    add_routes(app, make_state(tmp_path, TOKEN))
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 3000 + b"]" * 3000,  # past the JSON parser's recursion limit: was a 500
        b'{"by": NaN}',
        b'{"by": "caf\xe9"}',
        b'{"by": "a\\u0000b"}',
        b'{"by": "' + b"9" * 5000 + b'"}',
    ],
)
async def test_hostile_bodies_are_400_or_413_never_500(client: Client, body: bytes) -> None:
    """Deep nesting, NaN, non-UTF-8, control characters, oversize: refused with a reason."""
    resp = await client.post("/api/v1/pause", headers=AUTH, data=body)
    assert resp.status in (400, 413), await resp.text()
    assert "error" in await resp.json()
    status = await (await client.get("/api/v1/status")).json()
    assert status["watcher"]["paused"] is False


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("opne=1", "unknown query parameter(s) opne"),
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=1001", "limit must be a whole number from 1 to 1000"),
        ("limit=" + "9" * 400, "limit must be a whole number"),
        ("limit=00001000000", "limit must be a whole number"),
        ("limit=%D9%A3", "limit must be a whole number"),  # Arabic-Indic three: isdigit()
        ("limit=5&limit=6", "more than once: limit"),
        ("open=maybe", "open must be"),
        ("open=1&" + "x" * 600, "query string over 512 bytes"),
    ],
)
async def test_bad_query_strings_are_400_with_the_reason(
    client: Client, query: str, reason: str
) -> None:
    """Unknown, repeated, out-of-range or oversized query parameters are refused, named."""
    resp = await client.get(f"/api/v1/incidents?{query}")
    assert resp.status == 400
    assert reason in (await resp.json())["error"]


async def test_endpoints_without_parameters_refuse_any(client: Client) -> None:
    """A query on an endpoint that takes none is a mistake worth saying."""
    resp = await client.get("/api/v1/status?verbose=1")
    assert resp.status == 400
    assert "takes no query parameters" in (await resp.json())["error"]


async def test_good_queries_still_work(client: Client) -> None:
    """The documented parameters keep working."""
    for query in ("", "?open=1", "?open=false&limit=5", "?limit=1000"):
        resp = await client.get(f"/api/v1/incidents{query}")
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("incident_id", ["x" * 300, "inc%00x", "..%2F..", "-leading"])
async def test_implausible_incident_ids_are_refused(client: Client, incident_id: str) -> None:
    """An id that cannot name an incident is a 400, before any lookup."""
    resp = await client.get(f"/api/v1/incidents/{incident_id}")
    assert resp.status == 400
    resp = await client.post(f"/api/v1/incidents/{incident_id}/approve", headers=AUTH)
    assert resp.status == 400


async def test_a_body_arriving_in_pieces_is_read_whole(client: Client) -> None:
    """A chunked body is read to its end, not just its first piece: a valid body split in
    two is accepted, and one past the limit is 413 even without a Content-Length."""

    async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0.01)  # let the first piece arrive alone

    resp = await client.post("/api/v1/pause", headers=AUTH, data=pieces(b'{"by": ', b'"ops"}'))
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/v1/resume", headers=AUTH, data=pieces(b" " * 3000, b" " * 3000))
    assert resp.status == 413
