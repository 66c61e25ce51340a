"""HTTP(S) health probe with conditions on status, body, a JSON field and latency.

One shared `aiohttp.ClientSession` serves every target so connections are kept alive
between checks; `new_session()` builds one tuned for many targets. No aiohttp type
leaves this module: callers get a `ProbeResult`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from yarl import URL

from drwatch.model.observation import Health
from drwatch.probes.result import ProbeResult, seconds
from drwatch.probes.tcp import connect_failure

DEFAULT_MAX_BODY = 64 * 1024
_URL_CACHE = 100_000
JsonValue = str | int | float | bool
_MISSING = object()


@dataclass(frozen=True, slots=True)
class HttpConditions:
    """What a healthy answer looks like. An empty `expect_status` accepts any status."""

    expect_status: Sequence[int] = (200,)
    body_contains: str | None = None
    json_path: str | None = None
    json_equals: JsonValue | None = None
    max_latency: float | None = None
    insecure_tls: bool = False


def new_session(
    limit: int = 1000,
    keepalive_s: float = 60.0,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """A session for many targets: `limit` connections in use at once (idle ones do not
    count), kept alive longer than a check interval, no cookies, no session-wide timeout
    (every check sets its own deadline). Must be called inside the running loop.
    `resolver` replaces DNS (the benchmark maps many names to loopback)."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        ttl_dns_cache=60,
        dns_cache_max_size=100_000,
        keepalive_timeout=keepalive_s,
        resolver=resolver,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class HttpCheck(Protocol):
    """What the observers need of an HTTP probe (HttpProbe; fakes in tests)."""

    async def check(self, url: str, cond: HttpConditions, timeout_s: float) -> ProbeResult: ...


class HttpProbe:
    """GETs a URL within a deadline and judges the answer against `HttpConditions`."""

    def __init__(
        self, session: aiohttp.ClientSession, *, max_body_bytes: int = DEFAULT_MAX_BODY
    ) -> None:
        self._session = session
        self._max_body = max_body_bytes
        self._urls: dict[str, URL] = {}

    async def check(self, url: str, cond: HttpConditions, timeout_s: float) -> ProbeResult:
        started = time.monotonic()
        # Redirects are not followed: a health endpoint that redirects is misconfigured.
        ssl = not cond.insecure_tls
        try:
            with _Deadline(timeout_s):
                async with self._session.get(
                    self._parsed(url), ssl=ssl, allow_redirects=False
                ) as resp:
                    # One byte over the cap tells "exactly at the cap" from "truncated".
                    body = await _read_capped(resp.content, self._max_body + 1)
                    status = resp.status
        except TimeoutError:
            return ProbeResult(Health.UNKNOWN, f"timeout after {seconds(timeout_s)}")
        except aiohttp.ClientError as err:
            return client_failure(err)
        latency = time.monotonic() - started
        reason = judge(cond, status, body, latency, self._max_body)
        health = Health.DOWN if reason else Health.UP
        return ProbeResult(health, reason, latency_s=latency, status=status)

    def _parsed(self, url: str) -> URL:
        # Targets are checked every few seconds with the same URL: parse each once.
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        return parsed


class _Deadline:
    """`asyncio.timeout(timeout_s)` for one check, with the same semantics (the task is
    cancelled at the deadline; that cancellation, and only that one, leaves as
    TimeoutError; a cancellation from outside still propagates), at less cost per use:
    on Python 3.11 `asyncio.timeout` looks the running loop up three times (a getpid()
    system call each) and runs two coroutines. A saturated scheduler went from 78% to 80%
    of raw aiohttp's checks per CPU second with this (bench/scheduler.py)."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task", "_timeout")

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._expired = False

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = loop.call_at(loop.time() + self._timeout, self._expire)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._handle.cancel()
        # As asyncio.Timeout: undo our cancel request; raise TimeoutError only when the
        # cancellation under way is ours and nobody else asked for one meanwhile.
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await stream.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if stream.at_eof():
            break
    return b"".join(chunks)


def client_failure(err: aiohttp.ClientError) -> ProbeResult:
    """Map aiohttp's errors: refused and broken answers -> DOWN, the rest -> UNKNOWN."""
    if isinstance(err, aiohttp.ClientSSLError):
        # The server answered with a certificate no client would accept.
        return ProbeResult(Health.DOWN, "tls: certificate not accepted")
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return ProbeResult(Health.UNKNOWN, "dns: name not resolved")
    if isinstance(err, aiohttp.ClientConnectorError):
        return connect_failure(err.os_error)
    if isinstance(err, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return ProbeResult(Health.DOWN, "malformed http response")
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return ProbeResult(Health.UNKNOWN, "server disconnected")
    return ProbeResult(Health.UNKNOWN, f"http: {type(err).__name__}")


def judge(cond: HttpConditions, status: int, body: bytes, latency: float, cap: int) -> str:
    """The first failed condition as a short reason, or "" when every condition holds."""
    if cond.expect_status and status not in cond.expect_status:
        want = ",".join(str(s) for s in cond.expect_status)
        return f"status {status}, want {want}"
    if len(body) > cap and (cond.body_contains is not None or cond.json_path):
        return f"body over {cap} bytes"
    if cond.body_contains is not None and cond.body_contains.encode() not in body:
        return f"body lacks {cond.body_contains!r}"
    if cond.json_path:
        reason = _judge_json(body, cond.json_path, cond.json_equals)
        if reason:
            return reason
    if cond.max_latency is not None and latency > cond.max_latency:
        return f"latency {seconds(latency)} > {seconds(cond.max_latency)}"
    return ""


def _judge_json(body: bytes, path: str, want: JsonValue | None) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "body is not json"
    got = dig(doc, path)
    if got is _MISSING:
        return f"json {path} missing, want {want!r}"
    if not same_json_value(got, want):
        return f"json {path}={got!r}, want {want!r}"
    return ""


def dig(doc: Any, path: str) -> Any:
    """The value at a dotted path (`checks.db.status`, list items by index: `items.0.ok`)."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def same_json_value(got: Any, want: JsonValue | None) -> bool:
    """Equality that keeps JSON's types apart: `true` is not `1`, `"1"` is not `1`."""
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, int | float):
        return isinstance(got, int | float) and got == want
    return bool(type(got) is type(want) and got == want)
