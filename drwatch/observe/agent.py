"""The daemon's client for `drwatch agent`: signed facts polls and allow-listed actions.

`AgentClient.check(instance, timeout_s)` never raises: every outcome is an AGENT
observation of the instance. Refused connection: DOWN (the host answered "nobody
here"). Timeout, a refused signature, an error status, an oversized or malformed
answer: UNKNOWN with the reason (we failed to see the agent; it may be fine).
Reachable: UP, and `detail` holds the facts as the wire's plain dict (keys in
docs/agent.md), so assess reads disks, memory and the database check from there.

Requests are signed for the instance they go to (protocol v2), with the shared secret
or that instance's own secret (`agent.per_host_secrets`); an answer counts only when
the agent signed it for our request's nonce. An unsigned or mismatched answer is
UNKNOWN with the reason, and an action answered that way is an error.

`AgentObserver.jobs_for(fleet)` gives the scheduler one AGENT job per instance.
`AgentClient.action(...)` is for playbooks; it raises `AgentActionError`, whose
`retryable` says whether the action certainly did not happen (safe to retry).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import aiohttp

from drwatch.agent.wire import (
    ACTIONS_PATH,
    ANSWER_SIGNATURE_HEADER,
    FACTS_PATH,
    NONCE_HEADER,
    Facts,
    answer_refusal,
    decode_action_result,
    decode_error,
    decode_facts,
    derive_host_secret,
    encode_action_request,
    facts_to_dict,
    signed_headers,
)
from drwatch.config import AgentClientConfig, LayerTiming
from drwatch.errors import ConfigError, DrwatchError, WireError
from drwatch.fields import split_host_port
from drwatch.logs import get_logger
from drwatch.model.fleet import Fleet, Instance
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.scheduler import CheckJob
from drwatch.probes.result import seconds
from drwatch.probes.tcp import connect_failure

AGENT_ADDR_TAG = "drwatch:agent-addr"
# Playbooks put their own deadline around an action; this one bounds callers that do not.
DEFAULT_ACTION_TIMEOUT_S = 30.0
# Refusals are not signed (the agent does not sign for a request it could not verify).
UNSIGNED_STATUSES = frozenset({401, 413})
_ACTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _log() -> Any:
    # Fetched per use: a logger bound at import would miss a later logs.configure().
    return get_logger(component="agent_client")


Clock = Callable[[], float]


class AgentActionError(DrwatchError):
    """An agent action did not succeed.

    `retryable` is True only when the request certainly did not run (connection refused,
    no address); after a timeout the action may have happened, so the caller must verify.
    `status` is the agent's HTTP status when it answered.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class _AnswerTooLargeError(Exception):
    """The agent's answer exceeded max_response_bytes (internal to this module)."""


class _UnverifiedAnswerError(Exception):
    """The answer was not signed by the agent for our request (internal to this module)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes


def agent_address(instance: Instance, cfg: AgentClientConfig) -> tuple[str, int] | None:
    """(host, port) of the instance's agent: its configured ip and port, or the
    `drwatch:agent-addr` tag when the config allows that tag."""
    override = instance.tag(AGENT_ADDR_TAG) if cfg.allow_address_tag else None
    if override:
        with suppress(ValueError):  # a malformed tag: the configured address
            return split_host_port(override)
    ip = instance.private_ip if cfg.address == "private_ip" else instance.public_ip
    return (ip, cfg.port) if ip else None


def client_tls_context(cfg: AgentClientConfig) -> ssl.SSLContext | None:
    """The context that verifies agents' certificates (scheme https); None for http.

    Raises ConfigError when the CA file cannot be loaded."""
    if cfg.scheme != "https":
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(cfg.tls_ca_file) if cfg.tls_ca_file else None
        )
    except (OSError, ssl.SSLError) as err:
        raise ConfigError([f"agent.tls_ca_file: cannot load {cfg.tls_ca_file}: {err}"]) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _failure(health: Health, reason: str) -> tuple[Health, str, Facts | None]:
    return health, reason, None


def _client_error(err: aiohttp.ClientError) -> tuple[Health, str, Facts | None]:
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        # Someone answered, but not with a certificate we trust: that is not "down".
        return _failure(Health.UNKNOWN, f"tls: {err.certificate_error}")
    if isinstance(err, aiohttp.ClientSSLError):
        return _failure(Health.UNKNOWN, f"tls: {err}")
    if isinstance(err, aiohttp.ClientConnectorError):
        result = connect_failure(err.os_error)
        return _failure(result.health, result.reason)
    return _failure(Health.UNKNOWN, f"http: {type(err).__name__}")


def _judge(answer: _Answer) -> tuple[Health, str, Facts | None]:
    if answer.status == 401:
        return _failure(Health.UNKNOWN, "agent refused our signature")
    if answer.status != 200:
        return _failure(
            Health.UNKNOWN, f"agent answered {answer.status}: {decode_error(answer.body)}"
        )
    try:
        facts = decode_facts(answer.body)
    except WireError as err:
        return _failure(Health.UNKNOWN, f"malformed facts: {str(err)[:200]}")
    return Health.UP, _summary(facts), facts


def _summary(facts: Facts) -> str:
    """Empty when every local check is ok; else the failing checks, named."""
    bad = [f"{c.name}: {c.status.value}" for c in facts.checks.values() if c.status != "ok"]
    return "; ".join(bad)


class AgentClient:
    """Talks to the agent on each instance over one shared aiohttp session."""

    def __init__(
        self,
        cfg: AgentClientConfig,
        secret: bytes,
        session: aiohttp.ClientSession,
        *,
        clock: Clock = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`secret` is the shared secret, or the master one with `cfg.per_host_secrets`.
        `ssl_context` defaults to `client_tls_context(cfg)`."""
        self._cfg = cfg
        self._secret = secret
        self._session = session
        self._clock = clock
        self._ssl = ssl_context if ssl_context is not None else client_tls_context(cfg)
        self._last_ok: dict[str, float] = {}
        self._last_health: dict[str, Health] = {}

    async def check(self, instance: Instance, timeout_s: float) -> Observation:
        """The AGENT observation of `instance`. Never raises."""
        attempted_at = self._clock()
        started = time.monotonic()
        health, reason, facts = await self._poll(instance, timeout_s)
        if health is Health.UP:
            self._last_ok[instance.id] = attempted_at
        self._note(instance, health, reason)
        return Observation(
            target=instance.id,
            layer=Layer.AGENT,
            health=health,
            attempted_at=attempted_at,
            ok_at=self._last_ok.get(instance.id),
            reason=reason,
            latency_s=time.monotonic() - started if facts is not None else None,
            detail=facts_to_dict(facts) if facts is not None else {},
        )

    async def _poll(self, instance: Instance, timeout_s: float) -> tuple[Health, str, Facts | None]:
        addr = agent_address(instance, self._cfg)
        if addr is None:
            return _failure(Health.UNKNOWN, "no address: no ip and no agent-addr tag")
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._request("GET", FACTS_PATH, instance, addr, b"")
        except (
            OSError,  # TimeoutError and aiohttp's connection errors among them
            aiohttp.ClientError,
            _AnswerTooLargeError,
            _UnverifiedAnswerError,
            WireError,
        ) as err:
            return self._poll_failure(err, timeout_s)
        return _judge(answer)

    def _poll_failure(self, err: Exception, timeout_s: float) -> tuple[Health, str, Facts | None]:
        """A poll that did not get a usable answer, as the observation's health and reason."""
        if isinstance(err, TimeoutError):
            return _failure(Health.UNKNOWN, f"timeout after {seconds(timeout_s)}")
        if isinstance(err, aiohttp.ClientError):
            return _client_error(err)
        if isinstance(err, OSError):
            failure = connect_failure(err)
            return _failure(failure.health, failure.reason)
        if isinstance(err, _AnswerTooLargeError):
            reason = f"answer larger than {self._cfg.max_response_bytes} bytes"
        elif isinstance(err, _UnverifiedAnswerError):
            reason = f"answer refused: {err}"
        else:
            reason = str(err)
        return _failure(Health.UNKNOWN, reason)

    def _note(self, instance: Instance, health: Health, reason: str) -> None:
        """Log when an agent's reachability changes, not on every poll."""
        previous = self._last_health.get(instance.id)
        self._last_health[instance.id] = health
        if previous is not None and previous is not health:
            _log().info(
                "agent.health_changed",
                instance=instance.id,
                name=instance.name,
                health=health.value,
                was=previous.value,
                reason=reason,
            )

    async def action(
        self,
        instance: Instance,
        name: str,
        params: Mapping[str, str],
        timeout_s: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> dict[str, object]:
        """Run the allow-listed action `name` on the instance's agent; its result object.

        With the default `timeout_s` this is the act layer's `AgentActions` protocol.
        """
        where = f"{name} on {instance.name or instance.id}"
        addr = agent_address(instance, self._cfg)
        if addr is None:
            raise AgentActionError(f"{where}: no address for the agent", retryable=True)
        if not _ACTION_NAME.match(name):
            raise AgentActionError(f"{where}: not a valid action name")
        path = ACTIONS_PATH.format(name=name)
        _log().info("agent.action_sent", instance=instance.id, action=name, params=sorted(params))
        answer = await self._send_action(
            where, path, instance, addr, encode_action_request(params), timeout_s=timeout_s
        )
        return _action_result(where, answer)

    async def _send_action(
        self,
        where: str,
        path: str,
        instance: Instance,
        addr: tuple[str, int],
        body: bytes,
        *,
        timeout_s: float,
    ) -> _Answer:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._request("POST", path, instance, addr, body)
        except TimeoutError:
            raise AgentActionError(
                f"{where}: no answer within {seconds(timeout_s)}; it may have run"
            ) from None
        except aiohttp.ClientConnectorError as err:
            raise AgentActionError(
                f"{where}: {connect_failure(err.os_error).reason}", retryable=True
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise AgentActionError(f"{where}: {type(err).__name__}; it may have run") from None
        except _AnswerTooLargeError:
            raise AgentActionError(f"{where}: answer too large") from None
        except _UnverifiedAnswerError as err:
            raise AgentActionError(f"{where}: answer refused: {err}; it may have run") from None
        except WireError as err:
            raise AgentActionError(f"{where}: {err}", retryable=True) from None

    def _key(self, instance: Instance) -> bytes:
        """The secret shared with this instance's agent (one HMAC: not worth a cache)."""
        if not self._cfg.per_host_secrets:
            return self._secret
        return derive_host_secret(self._secret, instance.id)

    async def _request(
        self, method: str, path: str, instance: Instance, addr: tuple[str, int], body: bytes
    ) -> _Answer:
        host, port = addr
        shown = f"[{host}]" if ":" in host else host
        url = f"{self._cfg.scheme}://{shown}:{port}{path}"
        key = self._key(instance)
        headers = signed_headers(key, method, path, body, now=self._clock(), target=instance.id)
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if body:
            kwargs["data"] = body
            headers["Content-Type"] = "application/json"
        async with self._session.request(method, url, **kwargs) as resp:
            cap = self._cfg.max_response_bytes
            if resp.content_length is not None and resp.content_length > cap:
                raise _AnswerTooLargeError
            answer = _Answer(resp.status, await _read_capped(resp.content, cap))
            given = resp.headers.get(ANSWER_SIGNATURE_HEADER)
        if answer.status not in UNSIGNED_STATUSES:
            refusal = answer_refusal(
                key,
                target=instance.id,
                nonce=headers[NONCE_HEADER],
                status=answer.status,
                body=answer.body,
                given=given,
            )
            if refusal:
                raise _UnverifiedAnswerError(refusal)
        return answer


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """At most `cap` bytes; one more means the answer is too large."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(cap + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise _AnswerTooLargeError


_STATUS_MEANING = {
    401: "agent refused our signature",
    404: "the agent does not allow this action",
    413: "request too large for the agent",
}


def _action_result(where: str, answer: _Answer) -> dict[str, object]:
    if answer.status == 200:
        try:
            return decode_action_result(answer.body)
        except WireError as err:
            raise AgentActionError(f"{where}: malformed answer: {err}", status=200) from None
    meaning = _STATUS_MEANING.get(answer.status) or decode_error(answer.body)
    raise AgentActionError(f"{where}: {answer.status}: {meaning}", status=answer.status)


class AgentObserver:
    """Builds one AGENT scheduler job per instance; each job is one `AgentClient.check`."""

    def __init__(self, client: AgentClient, timing: LayerTiming) -> None:
        self._client = client
        self._timing = timing

    def jobs_for(self, fleet: Fleet) -> dict[str, CheckJob]:
        return {f"agent:{i.id}": self._job(i) for i in fleet}

    def _job(self, instance: Instance) -> CheckJob:
        async def run() -> Observation:
            return await self._client.check(instance, self._timing.timeout)

        t = self._timing
        return CheckJob(
            f"agent:{instance.id}", t.interval, t.timeout, run, Layer.AGENT, instance.id
        )
