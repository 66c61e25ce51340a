"""The watcher's half of `restore_from_dump`: a dump's plaintext into a new database host.

`AgentDumpRestore` is the ladder's `DumpRestore` (drwatch.act.base). It takes the
plaintext the catalogue decrypts in memory (drwatch.backup.ladder, the watcher's own
key) and streams it to the new host's agent (`POST /v1/restore`, drwatch.agent.wire):
the request signed for that instance like every agent request, the body cut into frames
each carrying its own HMAC bound to the request, the answer's signature checked. Nothing
of the plaintext touches the watcher's disk.

The channel must be encrypted: with `[agent] scheme = "http"` the stream goes only to an
agent on a loopback address (the sandbox, a test), and is refused for any other host
before a byte is sent. The agent refuses the same on its side.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from drwatch.act.base import JSON, AgentActions
from drwatch.agent.wire import (
    ANSWER_SIGNATURE_HEADER,
    NONCE_HEADER,
    RESTORE_PATH,
    RESTORE_STATUS_ACTION,
    SIGNATURE_HEADER,
    answer_refusal,
    decode_action_result,
    decode_error,
    derive_host_secret,
    encode_end_frame,
    encode_frame,
    signed_headers,
)
from drwatch.config import AgentClientConfig
from drwatch.errors import DrwatchError, WireError
from drwatch.model.fleet import Instance
from drwatch.observe.agent import agent_address, client_tls_context

FRAME = 256 * 1024
_CONNECT_TIMEOUT = 10.0


class DumpStreamError(DrwatchError):
    """The dump could not be streamed into the host, or the host's agent refused it."""


class AgentDumpRestore:
    """`DumpRestore` over the agents' signed channel (see the module's docstring)."""

    def __init__(
        self,
        cfg: AgentClientConfig,
        secret: bytes,
        session: aiohttp.ClientSession,
        agent: AgentActions,
        *,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._cfg = cfg
        self._secret = secret
        self._session = session
        self._agent = agent
        self._clock = clock
        self._ssl = ssl_context if ssl_context is not None else client_tls_context(cfg)

    def missing(self) -> str | None:
        return None

    async def restored(self, instance: Instance, backup_id: str) -> JSON | None:
        """The host's mark of a finished restore of `backup_id`, or None."""
        result = await self._agent.action(instance, RESTORE_STATUS_ACTION, {"backup_id": backup_id})
        return dict(result) if result.get("restored") is True else None

    async def restore(
        self, instance: Instance, backup_id: str, stream: AsyncIterator[bytes]
    ) -> JSON:
        where = f"restore of {backup_id} into {instance.name or instance.id}"
        addr = agent_address(instance, self._cfg)
        if addr is None:
            raise DumpStreamError(f"{where}: no address for the agent")
        host, port = addr
        if self._cfg.scheme != "https" and not _loopback(host):
            raise DumpStreamError(
                f"{where}: refusing to send a dump's plaintext over plain HTTP to {host} "
                '(set [agent] scheme = "https"; plain HTTP only to a loopback agent)'
            )
        key = self._key(instance)
        path = f"{RESTORE_PATH}?backup_id={quote(backup_id, safe='')}"
        headers = signed_headers(key, "POST", path, b"", now=self._clock(), target=instance.id)
        shown = f"[{host}]" if ":" in host else host
        url = URL(f"{self._cfg.scheme}://{shown}:{port}{path}", encoded=True)
        body = _frames(key, headers[SIGNATURE_HEADER], stream)
        kwargs: dict[str, Any] = {
            "headers": headers,
            "data": body,
            "allow_redirects": False,
            "timeout": aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
        }
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        try:
            async with self._session.post(url, **kwargs) as resp:
                status = resp.status
                answer = await resp.content.read(self._cfg.max_response_bytes)
                given = resp.headers.get(ANSWER_SIGNATURE_HEADER)
        except (aiohttp.ClientError, OSError) as err:
            raise DumpStreamError(f"{where}: the stream broke ({type(err).__name__})") from None
        finally:
            await body.aclose()
        return _result(where, key, instance.id, headers[NONCE_HEADER], status, answer, given)

    def _key(self, instance: Instance) -> bytes:
        if not self._cfg.per_host_secrets:
            return self._secret
        return derive_host_secret(self._secret, instance.id)


async def _frames(
    key: bytes, signature: str, stream: AsyncIterator[bytes]
) -> AsyncGenerator[bytes]:
    """The stream as authenticated frames of at most FRAME bytes, then the end frame."""
    seq = total = 0
    async for block in stream:
        for start in range(0, len(block), FRAME):
            data = block[start : start + FRAME]
            yield encode_frame(key, signature, seq, data)
            seq += 1
            total += len(data)
    yield encode_end_frame(key, signature, seq, total)


def _result(  # noqa: PLR0917
    where: str, key: bytes, target: str, nonce: str, status: int, body: bytes, given: str | None
) -> JSON:
    if status != 401:
        refusal = answer_refusal(
            key, target=target, nonce=nonce, status=status, body=body, given=given
        )
        if refusal:
            raise DumpStreamError(f"{where}: answer refused: {refusal}")
    if status != 200:
        meaning = "the agent refused our signature" if status == 401 else decode_error(body)
        raise DumpStreamError(f"{where}: {status}: {meaning}")
    try:
        return dict(decode_action_result(body))
    except WireError as err:
        raise DumpStreamError(f"{where}: malformed answer: {err}") from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
