"""The agent's HTTP service: signed requests only, facts and allow-listed actions.

Seams for the sandbox (which runs many agents in one process over simulated hosts):

- `create_app(cfg, host, checks, actions, secret=...)` builds the aiohttp application
  from a `HostFacts`, a check registry and an action registry;
- `serving(app, host, port)` runs it on loopback until the `async with` block ends and
  yields the bound port (pass port 0 for any free port);
- `run_agent(cfg, stop)` is what `drwatch agent` runs: the real host, the configured
  checks and actions, until `stop` is set.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from drwatch.agent.actions import Action, ActionError, build_actions
from drwatch.agent.checks import Check, build_checks, run_checks
from drwatch.agent.config import AgentConfig
from drwatch.agent.host import HostFacts, PsutilHost
from drwatch.agent.pgactions import database_actions
from drwatch.agent.postgres import database
from drwatch.agent.wire import (
    NONCE_HEADER,
    SCHEMA,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Facts,
    decode_action_request,
    encode_facts,
    encode_json,
    sign,
    signature_matches,
    worst,
)
from drwatch.errors import WireError
from drwatch.logs import get_logger
from drwatch.secretfile import read_secret
from drwatch.units import format_duration

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NONCE = re.compile(r"^[0-9a-f]{16,64}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
MAX_DISKS = 64
REPLAY_CAPACITY = 100_000
REFUSAL_LOG_EVERY_S = 60.0
log = get_logger(component="agent")


class ReplayCache:
    """Signatures seen recently. An entry lives as long as its timestamp could still pass."""

    def __init__(self, window: float, capacity: int = REPLAY_CAPACITY) -> None:
        self._window = window
        self._capacity = capacity
        self._expiry: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def first_time(self, signature: str, now: float) -> bool:
        """Record `signature`; False when it was seen before (or the cache is full)."""
        while self._order and self._order[0][0] < now:
            _, old = self._order.popleft()
            self._expiry.pop(old, None)
        if signature in self._expiry or len(self._expiry) >= self._capacity:
            return False
        expires = now + 2 * self._window
        self._expiry[signature] = expires
        self._order.append((expires, signature))
        return True


class Verifier:
    """Checks one request's signature, timestamp and freshness; says why it refuses."""

    def __init__(self, secret: bytes, max_skew: float, clock: Clock) -> None:
        self._secret = secret
        self._max_skew = max_skew
        self._clock = clock
        self._seen = ReplayCache(max_skew)

    def refusal(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """Empty when the request is authentic and fresh; otherwise the reason (for logs only)."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (timestamp and nonce and given):
            return "missing auth headers"
        if not (_NONCE.match(nonce) and _SIGNATURE.match(given)):
            return "malformed auth headers"
        now = self._clock()
        skew = _skew(timestamp, now)
        if skew > self._max_skew:
            return f"timestamp outside +/-{format_duration(self._max_skew)}"
        expected = sign(
            self._secret, method=method, path=path, timestamp=timestamp, nonce=nonce, body=body
        )
        if not signature_matches(expected, given):
            return "bad signature"
        if not self._seen.first_time(given, now):
            return "replayed signature"
        return ""


def _skew(timestamp: str, now: float) -> float:
    try:
        sent = float(timestamp)
    except ValueError:
        return math.inf
    return abs(now - sent) if math.isfinite(sent) else math.inf


class RefusalLog:
    """Logs a refusal reason when it first appears, then at most once a minute with a count."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def note(self, reason: str, remote: str | None) -> None:
        now = self._clock()
        last_at, suppressed = self._last.get(reason, (-math.inf, 0))
        if now - last_at < REFUSAL_LOG_EVERY_S:
            self._last[reason] = (last_at, suppressed + 1)
            return
        self._last[reason] = (now, 0)
        log.warning("agent.request_refused", reason=reason, remote=remote, repeats=suppressed)


class FactsCollector:
    """Gathers host facts and check results into one `Facts`."""

    def __init__(
        self,
        host: HostFacts,
        checks: Mapping[str, Check],
        timeout: float,
        clock: Clock,
        hostname: str,
    ) -> None:
        self._host = host
        self._hostname = hostname
        self._checks = checks
        self._timeout = timeout
        self._clock = clock

    async def collect(self) -> Facts:
        async with asyncio.TaskGroup() as tg:
            host_task = tg.create_task(self._host_facts())
            checks_task = tg.create_task(run_checks(self._checks, self._timeout))
        facts, checks = host_task.result(), checks_task.result()
        status = worst([c.status for c in checks.values()])
        return Facts(
            hostname=self._hostname,
            collected_at=self._clock(),
            status=status,
            uptime_s=facts["uptime_s"],
            cpu_percent=facts["cpu_percent"],
            load=facts["load"],
            memory=facts["memory"],
            disks={d.mount: d for d in facts["disks"][:MAX_DISKS]},
            checks=checks,
        )

    async def _host_facts(self) -> dict[str, Any]:
        # A hung mount blocks statvfs: read the host in a thread, under the check deadline.
        async with asyncio.timeout(self._timeout):
            return await asyncio.to_thread(_read_host, self._host)


def _read_host(host: HostFacts) -> dict[str, Any]:
    return {
        "uptime_s": host.uptime_s(),
        "cpu_percent": host.cpu_percent(),
        "load": host.load(),
        "memory": host.memory(),
        "disks": host.disks(),
    }


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=encode_json(data), status=status, content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return _json({"schema": SCHEMA, "error": message}, status)


class AgentService:
    """The request handlers and the auth middleware, sharing the agent's state."""

    def __init__(
        self,
        cfg: AgentConfig,
        collector: FactsCollector,
        actions: Mapping[str, Action],
        verifier: Verifier,
        clock: Clock,
    ) -> None:
        self._cfg = cfg
        self._collector = collector
        self._actions = actions
        self._verifier = verifier
        self._refusals = RefusalLog(clock)
        # One action at a time: side effects on one host must not interleave.
        self._action_lock = asyncio.Lock()

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self._cfg.max_request_bytes:
            return web.Response(status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        reason = self._verifier.refusal(request.method, request.raw_path, request.headers, body)
        if reason:
            self._refusals.note(reason, request.remote)
            return web.Response(status=401)  # no detail: a prober learns nothing
        return await handler(request)

    async def facts(self, _request: web.Request) -> web.Response:
        try:
            facts = await self._collector.collect()
        except TimeoutError:
            timeout = format_duration(self._cfg.check_timeout)
            return _error(f"host facts did not arrive within {timeout}", 503)
        body = encode_facts(facts)
        if len(body) > self._cfg.max_response_bytes:
            return _error(f"facts exceed {self._cfg.max_response_bytes} bytes", 500)
        return web.Response(body=body, content_type="application/json")

    async def action(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        action = self._actions.get(name)
        if action is None:
            return _error("unknown action", 404)
        try:
            params = decode_action_request(await request.read())
        except WireError as err:
            return _error(f"bad request: {err}", 400)
        async with self._action_lock:
            return await self._run_action(name, action, params)

    async def _run_action(self, name: str, action: Action, params: dict[str, str]) -> web.Response:
        log.info("agent.action_started", action=name, params=sorted(params))
        try:
            result = await action(params)
            body = encode_json({"schema": SCHEMA, "action": name, "result": result})
        except ActionError as err:
            log.warning("agent.action_failed", action=name, error=str(err), status=err.status)
            return _error(str(err), err.status)
        except (TypeError, ValueError) as err:
            log.error("agent.action_failed", action=name, error=f"result not JSON: {err}")
            return _error("action result is not JSON", 500)
        if len(body) > self._cfg.max_response_bytes:
            return _error(f"action result exceeds {self._cfg.max_response_bytes} bytes", 500)
        log.info("agent.action_finished", action=name)
        return web.Response(body=body, content_type="application/json")


def create_app(
    cfg: AgentConfig,
    host: HostFacts,
    checks: Mapping[str, Check],
    actions: Mapping[str, Action],
    *,
    secret: bytes | None = None,
    clock: Clock = time.time,
    hostname: str | None = None,
) -> web.Application:
    """The agent's aiohttp application.

    `secret` defaults to the contents of cfg.secret_file; `hostname` to this machine's.
    """
    key = read_secret(cfg.secret_file) if secret is None else secret
    verifier = Verifier(key, cfg.max_clock_skew, clock)
    name = hostname or socket.gethostname()
    collector = FactsCollector(host, checks, cfg.check_timeout, clock, name)
    service = AgentService(cfg, collector, actions, verifier, clock)
    # The middleware enforces the limit first; this bounds chunked bodies too.
    app = web.Application(middlewares=[service.authenticate], client_max_size=cfg.max_request_bytes)
    app.router.add_get("/v1/facts", service.facts)
    app.router.add_post("/v1/actions/{name}", service.action)
    return app


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` on host:port for the duration of the block; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()


async def run_agent(cfg: AgentConfig, stop: asyncio.Event) -> None:
    """Run the real agent (psutil host, configured checks and actions) until `stop` is set."""
    secret = read_secret(cfg.secret_file)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session, database(cfg.postgres) as pg:
        checks = build_checks(cfg, session, pg)
        actions = build_actions(cfg, database_actions(pg))
        app = create_app(cfg, PsutilHost(cfg.mounts), checks, actions, secret=secret)
        host, port = cfg.host_port
        async with serving(app, host, port) as bound:
            log.info(
                "agent.started",
                listen=f"{host}:{bound}",
                checks=sorted(checks),
                actions=sorted(actions),
            )
            await stop.wait()
        log.info("agent.stopped")
