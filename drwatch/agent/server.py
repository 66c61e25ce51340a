"""The agent's HTTP service: signed requests only, facts and allow-listed actions.

Requests must be signed for this agent's instance id (protocol v2, `drwatch.agent.wire`),
fresh, never seen before, and not older than the agent's own start; every answer to
such a request is signed and bound to its nonce.

Seams for the sandbox (which runs many agents in one process over simulated hosts):

- `create_app(cfg, host, checks, actions, secret=..., instance_id=...)` builds the aiohttp
  application from a `HostFacts`, a check registry and an action registry;
- `serving(app, host, port, ssl_context=None)` runs it until the `async with` block ends
  and yields the bound port (pass port 0 for any free port);
- `run_agent(cfg, stop)` is what `drwatch agent` runs: the real host, the configured
  checks and actions, until `stop` is set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from drwatch.agent.actions import Action, ActionError, build_actions
from drwatch.agent.backup import build_backup_action
from drwatch.agent.checks import Check, build_checks, run_checks
from drwatch.agent.config import AgentConfig
from drwatch.agent.host import HostFacts, PsutilHost
from drwatch.agent.pgactions import database_actions
from drwatch.agent.postgres import database, read_password
from drwatch.agent.restore import LocalDatabase, RestoreLimits, Restorer
from drwatch.agent.wire import (
    ANSWER_SIGNATURE_HEADER,
    NONCE_HEADER,
    PROTOCOL,
    RESTORE_PATH,
    RESTORE_STATUS_ACTION,
    SCHEMA,
    SIGNATURE_HEADER,
    TARGET_HEADER,
    TIMESTAMP_HEADER,
    VERSION_HEADER,
    Facts,
    FrameReader,
    decode_action_request,
    encode_facts,
    encode_json,
    sign,
    sign_answer,
    signature_matches,
    valid_target,
    worst,
)
from drwatch.errors import ConfigError, WireError
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


@dataclass(frozen=True, slots=True)
class _Signed:
    """A request's auth headers; `target` is None for protocol v1."""

    target: str | None
    timestamp: str
    nonce: str
    signature: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's authentication: `reason` is empty when it passed."""

    reason: str
    nonce: str = ""
    v1: bool = False


class Verifier:
    """Checks one request's target, signature, timestamp and freshness; says why it refuses.

    A request timestamped before `started_at` is refused even when it is fresh and was
    never seen here: the replay cache lives in memory, so without this a restart would
    reopen the window for every request signed in the last `max_skew`.
    """

    def __init__(
        self,
        secret: bytes,
        max_skew: float,
        clock: Clock,
        *,
        identity: str,
        started_at: float,
        accept_v1: bool = False,
    ) -> None:
        self._secret = secret
        self._max_skew = max_skew
        self._clock = clock
        self._identity = identity
        self._started_at = started_at
        self._accept_v1 = accept_v1
        self._seen = ReplayCache(max_skew)

    def check(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Verdict:
        """The verdict on one request (the reason is for logs only, never for the caller)."""
        signed = self._parse(headers)
        if isinstance(signed, str):
            return Verdict(signed)
        reason = self._judge(signed, method, path, body)
        return Verdict(reason, signed.nonce, v1=signed.target is None)

    def _parse(self, headers: Mapping[str, str]) -> _Signed | str:
        """The auth headers, or why they cannot be checked at all."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (timestamp and nonce and given):
            return "missing auth headers"
        if not (_NONCE.match(nonce) and _SIGNATURE.match(given)):
            return "malformed auth headers"
        target, problem = self._target(headers)
        return problem or _Signed(target, timestamp, nonce, given)

    def _judge(self, signed: _Signed, method: str, path: str, body: bytes) -> str:
        now = self._clock()
        sent = _sent_at(signed.timestamp)
        if abs(now - sent) > self._max_skew:
            return f"timestamp outside +/-{format_duration(self._max_skew)}"
        expected = sign(
            self._secret,
            method=method,
            path=path,
            timestamp=signed.timestamp,
            nonce=signed.nonce,
            body=body,
            target=signed.target,
        )
        if not signature_matches(expected, signed.signature):
            return "bad signature"
        if sent < self._started_at:
            return "timestamp before the agent started (a replay across a restart?)"
        if not self._seen.first_time(signed.signature, now):
            return "replayed signature"
        return ""

    def _target(self, headers: Mapping[str, str]) -> tuple[str | None, str]:
        """(the signed target or None for v1, a refusal reason or "")."""
        version = headers.get(VERSION_HEADER)
        if version is None:
            if self._accept_v1:
                return None, ""
            return None, "protocol v1 request (set accept_v1 = true only while upgrading)"
        if version != PROTOCOL:
            return None, "unknown protocol version"
        target = headers.get(TARGET_HEADER, "")
        if not valid_target(target):
            return None, "malformed auth headers"
        if target != self._identity:
            return None, "signed for another agent"
        return target, ""


def _sent_at(timestamp: str) -> float:
    """The request's timestamp; -inf (outside any window) when it is not a finite number."""
    try:
        sent = float(timestamp)
    except ValueError:
        return -math.inf
    return sent if math.isfinite(sent) else -math.inf


class RefusalLog:
    """Logs a reason when it first appears, then at most once a minute with a count."""

    def __init__(self, clock: Clock, event: str = "agent.request_refused") -> None:
        self._clock = clock
        self._event = event
        self._last: dict[str, tuple[float, int]] = {}

    def note(self, reason: str, remote: str | None) -> None:
        now = self._clock()
        last_at, suppressed = self._last.get(reason, (-math.inf, 0))
        if now - last_at < REFUSAL_LOG_EVERY_S:
            self._last[reason] = (last_at, suppressed + 1)
            return
        self._last[reason] = (now, 0)
        log.warning(self._event, reason=reason, remote=remote, repeats=suppressed)


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
        """The facts; TimeoutError when the host's own numbers miss the deadline."""
        try:
            async with asyncio.TaskGroup() as tg:
                host_task = tg.create_task(self._host_facts())
                checks_task = tg.create_task(run_checks(self._checks, self._timeout))
        except* TimeoutError:
            # The task group wraps it; the handler answers a bare timeout with a 503.
            raise TimeoutError from None
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
        auth: AnswerSigner,
        clock: Clock,
        *,
        restorer: Restorer | None = None,
    ) -> None:
        self._cfg = cfg
        self._collector = collector
        self._actions = actions
        self._auth = auth
        self._restorer = restorer
        self._refusals = RefusalLog(clock)
        self._v1_requests = RefusalLog(clock, "agent.v1_request_accepted")
        # One action at a time: side effects on one host must not interleave.
        self._action_lock = asyncio.Lock()

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # A restore stream is signed with an empty body; its frames carry their own MACs
        # (drwatch.agent.wire), checked by the handler before any byte is used.
        streaming = request.path == RESTORE_PATH
        length = request.content_length
        if not streaming and length is not None and length > self._cfg.max_request_bytes:
            return web.Response(status=413)
        try:
            body = b"" if streaming else await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        verdict = self._auth.verifier.check(request.method, request.raw_path, request.headers, body)
        if verdict.reason:
            self._refusals.note(verdict.reason, request.remote)
            return web.Response(status=401)  # no detail: a prober learns nothing
        if verdict.v1:
            self._v1_requests.note("protocol v1 request accepted (accept_v1)", request.remote)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # no such route, method not allowed
            response = _error(exc.reason, exc.status)
        return self._auth.sign(response, verdict.nonce)

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
        if not getattr(action, "exclusive", True):  # a long backup holds nothing back
            return await self._run_action(name, action, params)
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

    async def restore(self, request: web.Request) -> web.Response:
        """`POST /v1/restore?backup_id=ID`: a dump's plaintext, in authenticated frames,
        into the local database (drwatch.agent.restore). Only over TLS, or from loopback."""
        if self._restorer is None:
            return _error("restore is not enabled on this agent ([postgres] actions)", 404)
        if not request.secure and not _loopback(request.remote):
            return _error(
                "refusing a dump's plaintext over plain HTTP from another host: "
                "configure tls_cert_file and tls_key_file",
                403,
            )
        reader = FrameReader(
            self._auth.secret,
            request.headers.get(SIGNATURE_HEADER, ""),
            _exactly(request),
            self._restorer.limits.max_bytes,
        )
        async with self._action_lock:
            try:
                result = await self._restorer.restore(request.query.get("backup_id", ""), reader)
            except ActionError as err:
                log.warning("agent.restore_failed", error=str(err), status=err.status)
                return _error(str(err), err.status)
        return _json({"schema": SCHEMA, "action": "restore", "result": result})


def _exactly(request: web.Request) -> Callable[[int], Awaitable[bytes]]:
    """Read exactly n bytes of the body, or what is left of it at its end."""

    async def read(n: int) -> bytes:
        try:
            return await request.content.readexactly(n)
        except asyncio.IncompleteReadError as err:
            return err.partial

    return read


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class AnswerSigner:
    """The agent's key and identity: verifies requests, signs the answers to them."""

    def __init__(self, secret: bytes, identity: str, verifier: Verifier) -> None:
        self.secret = secret
        self._secret = secret
        self._identity = identity
        self.verifier = verifier

    def sign(self, response: web.StreamResponse, nonce: str) -> web.StreamResponse:
        body = response.body if isinstance(response, web.Response) else None
        if not isinstance(body, bytes):
            # Every handler here answers with bytes; anything else cannot be signed.
            body = encode_json({"schema": SCHEMA, "error": "answer could not be signed"})
            response = web.Response(body=body, status=500, content_type="application/json")
        response.headers[ANSWER_SIGNATURE_HEADER] = sign_answer(
            self._secret, target=self._identity, nonce=nonce, status=response.status, body=body
        )
        return response


def create_app(
    cfg: AgentConfig,
    host: HostFacts,
    checks: Mapping[str, Check],
    actions: Mapping[str, Action],
    *,
    secret: bytes | None = None,
    clock: Clock = time.time,
    hostname: str | None = None,
    instance_id: str | None = None,
    restorer: Restorer | None = None,
) -> web.Application:
    """The agent's aiohttp application.

    `secret` defaults to the contents of cfg.secret_file; `hostname` to this machine's;
    `instance_id` to cfg.instance_id or the contents of cfg.instance_id_file. The agent
    refuses requests timestamped before this call (its start).
    """
    key = read_secret(cfg.secret_file) if secret is None else secret
    identity = instance_id or read_instance_id(cfg)
    started_at = clock()
    verifier = Verifier(
        key,
        cfg.max_clock_skew,
        clock,
        identity=identity,
        started_at=started_at,
        accept_v1=cfg.accept_v1,
    )
    name = hostname or socket.gethostname()
    collector = FactsCollector(host, checks, cfg.check_timeout, clock, name)
    service = AgentService(
        cfg, collector, actions, AnswerSigner(key, identity, verifier), clock, restorer=restorer
    )
    # The middleware enforces the limit first; this bounds chunked bodies too.
    app = web.Application(middlewares=[service.authenticate], client_max_size=cfg.max_request_bytes)
    app.router.add_get("/v1/facts", service.facts)
    app.router.add_post("/v1/actions/{name}", service.action)
    app.router.add_post(RESTORE_PATH, service.restore)
    return app


def read_instance_id(cfg: AgentConfig) -> str:
    """The agent's own instance id: from the config, or from cfg.instance_id_file."""
    if cfg.instance_id is not None:
        return cfg.instance_id
    path = cfg.instance_id_file
    if path is None:  # the config's validation requires one of the two
        raise ConfigError(["instance_id: set instance_id or instance_id_file"])
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as err:
        raise ConfigError([f"instance_id_file: {path}: cannot read: {err.strerror}"]) from None
    if not valid_target(text):
        raise ConfigError([f"instance_id_file: {path}: {text[:64]!r} is not an instance id"])
    return text


def tls_context(cfg: AgentConfig) -> ssl.SSLContext | None:
    """The server-side TLS context from cfg.tls_cert_file/tls_key_file; None for plain HTTP."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            [f"tls_cert_file/tls_key_file: cannot load {cfg.tls_cert_file}: {err}"]
        ) from None
    return context


@asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve `app` on host:port (HTTPS with `ssl_context`) for the block; yields the port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound: int = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()


async def run_agent(cfg: AgentConfig, stop: asyncio.Event) -> None:
    """Run the real agent (psutil host, configured checks and actions) until `stop` is set."""
    secret = read_secret(cfg.secret_file)
    identity = read_instance_id(cfg)
    context = tls_context(cfg)
    if cfg.accept_v1:
        log.warning(
            "agent.accepting_v1",
            detail="protocol v1 requests are accepted (accept_v1 = true): "
            "remove it once every watcher speaks v2",
        )
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session, database(cfg.postgres) as pg:
        checks = build_checks(cfg, session, pg)
        builtin = database_actions(pg)
        if cfg.backup is not None:
            builtin["backup"] = build_backup_action(cfg.backup, cfg.postgres)
        restorer = local_restorer(cfg)
        if restorer is not None:
            builtin[RESTORE_STATUS_ACTION] = restorer.status
        actions = build_actions(cfg, builtin)
        app = create_app(
            cfg,
            PsutilHost(cfg.mounts),
            checks,
            actions,
            secret=secret,
            instance_id=identity,
            restorer=restorer,
        )
        host, port = cfg.host_port
        async with serving(app, host, port, context) as bound:
            log.info(
                "agent.started",
                listen=f"{'https' if context else 'http'}://{host}:{bound}",
                instance_id=identity,
                checks=sorted(checks),
                actions=sorted(actions),
            )
            await stop.wait()
        log.info("agent.stopped")


def local_restorer(cfg: AgentConfig) -> Restorer | None:
    """The restorer `[postgres] actions = ["restore", ...]` enables, into the local server."""
    pg = cfg.postgres
    if pg is None or "restore" not in pg.actions:
        return None
    db = LocalDatabase(
        pg.host, pg.port, pg.user, pg.database, pg.bin_dir, read_password(pg.password_file)
    )
    return Restorer(lambda: db, RestoreLimits(pg.restore_max_bytes, pg.restore_timeout))
