"""The one module that speaks to etcd (through aetcd): domain types in, domain errors out.

Every call has a deadline (`request_timeout`); a call that fails for want of etcd
raises `EtcdUnavailableError`, and the following call opens a new channel to the next
endpoint (the same one when there is only one).
aetcd 1.0 opens only plaintext channels to one host; `_Client` opens the channel itself
(TLS when configured) and leaves the rest of aetcd as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.transactions
import aetcd.watcher
import grpc  # type: ignore[import-untyped]

from drwatch.cluster.errors import EtcdRefusedError, EtcdUnavailableError
from drwatch.config import ClusterConfig
from drwatch.fields import split_host_port

T = TypeVar("T")

# etcd answers these when the request itself is wrong or not allowed: retrying elsewhere
# would not help, and it is not an outage.
# Codes that mean etcd (or the way to it) is not there; any other answer is a refusal.
_OUTAGE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)
# grpc.aio's own errors (a call on a channel another call has just replaced) are not
# RpcErrors; they have no status code, so they count as an outage.
_GRPC_BASE = grpc.aio.BaseError
# A dead channel is re-dialled within a second, not after gRPC's default 2-minute backoff.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: `target` of `key` `op` `value`. A missing key has
    create, mod and version 0."""

    key: str
    target: Literal["create", "mod", "version"]
    op: Literal["==", "!=", "<", ">"]
    value: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: bytes
    cert: bytes | None
    key: bytes | None


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client with a channel we open: TLS (server CA, optional client pair)."""

    def __init__(self, tls: TlsFiles | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        # gRPC's target: an IPv6 address in brackets, as in the config.
        host = f"[{self._host}]" if ":" in self._host else self._host
        target = f"{host}:{self._port}"
        if self._tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=self._options.items())
        else:
            creds = grpc.ssl_channel_credentials(self._tls.ca, self._tls.key, self._tls.cert)
            self.channel = grpc.aio.secure_channel(target, creds, options=self._options.items())
        if self._username is not None:
            auth = aetcd.rpc.AuthStub(self.channel)
            request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
            try:
                resp = await auth.Authenticate(request, timeout=self._timeout)
            except BaseException:
                await self.channel.close()
                self.channel = None
                raise
            self.metadata = (("token", resp.token),)
        self.kvstub = aetcd.rpc.KVStub(self.channel)
        self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
        self.leasestub = aetcd.rpc.LeaseStub(self.channel)
        self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(
            aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


class Etcd:
    """A connection to one etcd cluster, given as its client endpoints."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._auth = (username, password)
        self._index = 0
        self._client = self._new_client()
        # gRPC calls abandoned at their deadline, still winding down (see `_bounded`).
        self._abandoned: set[asyncio.Future[Any]] = set()

    @classmethod
    def from_config(cls, cfg: ClusterConfig) -> Etcd:
        tls = None
        if cfg.tls is not None:
            tls = TlsFiles(
                ca=cfg.tls.ca_file.read_bytes(),
                cert=cfg.tls.cert_file.read_bytes() if cfg.tls.cert_file else None,
                key=cfg.tls.key_file.read_bytes() if cfg.tls.key_file else None,
            )
        password = _read_secret(cfg.password_file) if cfg.password_file else None
        return cls(
            cfg.endpoints,
            timeout=cfg.request_timeout,
            tls=tls,
            username=cfg.username,
            password=password,
        )

    @property
    def endpoint(self) -> str:
        """The endpoint the next call goes to."""
        return self.endpoints[self._index]

    def _new_client(self) -> _Client:
        host, port = split_host_port(self.endpoint)
        return _Client(
            self._tls,
            host=host,
            port=port,
            username=self._auth[0],
            password=self._auth[1],
            timeout=self.timeout,
            options=_CHANNEL_OPTIONS,
        )

    async def close(self) -> None:
        await self._quietly(self._client.close())
        for fut in list(self._abandoned):
            fut.cancel()
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=self.timeout)

    async def _bounded(self, aw: Awaitable[T], deadline: float) -> T:
        """`aw`, given up after `deadline` s however it reacts to cancellation.

        Measured with a SIGSTOPped etcd: grpc.aio may swallow the cancellation that
        `asyncio.timeout` sends (the call then waits forever on a connection that never
        answers), and a call whose channel another task closes raises CancelledError in a
        task nobody cancelled, which would end the caller's loop silently. So the call runs
        in its own future: on the deadline we stop waiting and cancel it; a cancellation we
        did not ask for is reported as an outage (`_ForeignCancelError`).
        """
        fut = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({fut}, timeout=deadline)
        finally:
            if not fut.done():
                fut.cancel()
                self._abandoned.add(fut)
                fut.add_done_callback(_forget(self._abandoned))
        if not done:
            raise TimeoutError
        if fut.cancelled():
            raise _ForeignCancelError("the call was cancelled under us (its channel closed)")
        return fut.result()

    async def _quietly(self, aw: Awaitable[Any]) -> None:
        """Closing and cancelling are best effort: a dead etcd must not hang shutdown."""
        with contextlib.suppress(*_QUIET):
            await self._bounded(aw, self.timeout)

    async def _call(self, what: str, fn: Callable[[_Client], Awaitable[T]]) -> T:
        try:
            return await self._call_once(what, fn)
        except _AuthExpiredError:
            # etcd forgets its auth tokens when it restarts: authenticate again, once.
            return await self._call_once(what, fn)

    async def _call_once(self, what: str, fn: Callable[[_Client], Awaitable[T]]) -> T:
        client = self._client
        try:
            return await self._bounded(fn(client), self.timeout)
        except (
            TimeoutError,
            _ForeignCancelError,
            aetcd.exceptions.ClientError,
            grpc.RpcError,
            _GRPC_BASE,
        ) as exc:
            detail = str(exc) or type(exc).__name__
            if _code(exc) is grpc.StatusCode.UNAUTHENTICATED and self._auth[0] is not None:
                await self._replace(client, self._index)
                raise _AuthExpiredError(detail) from exc
            if not _is_outage(exc):
                raise EtcdRefusedError(f"etcd refused {what}: {detail}") from exc
            # A fresh channel for the next call, on the next endpoint: a connection that
            # lost bytes to a partition can stay open and never answer again.
            await self._replace(client, (self._index + 1) % len(self.endpoints))
            raise EtcdUnavailableError(f"etcd {what} failed: {detail}") from exc

    async def _replace(self, failed: _Client, index: int) -> None:
        """A new client (on endpoint `index`) for the next call; close the failed one."""
        if failed is not self._client:
            return  # another call replaced it already
        self._index = index
        self._client = self._new_client()
        await self._quietly(failed.close())

    # -- keys -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        got = await self._call(f"get {key}", lambda c: c.get(key.encode()))
        return _kv(got) if got is not None else None

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        got = await self._call(f"get {prefix}*", lambda c: c.get_prefix(prefix.encode()))
        return [_kv(kv) for kv in got]

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Returns the store's revision after the put."""
        got = await self._call(
            f"put {key}", lambda c: c.put(key.encode(), value, lease=lease or None)
        )
        return int(got.header.revision)

    async def delete_prefix(self, prefix: str) -> None:
        await self._call(f"delete {prefix}*", lambda c: c.delete_prefix(prefix.encode()))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Put | Delete]) -> bool:
        """All of `success` if every comparison holds, else nothing. Returns which."""

        async def run(c: _Client) -> bool:
            succeeded, _ = await c.transaction(
                compare=[_compare(c, x) for x in compare],
                success=[_op(c, op) for op in success],
                failure=[],
            )
            return bool(succeeded)

        return await self._call("transaction", run)

    # -- leases -----------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        lease = await self._call("lease grant", lambda c: c.lease(ttl))
        return int(lease.id)

    async def keepalive(self, lease: int) -> int:
        """One keepalive; returns the TTL etcd now gives the lease (0: it has expired)."""
        reply = await self._call("lease keepalive", lambda c: c.refresh_lease(lease))
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease: int) -> None:
        await self._call("lease revoke", lambda c: c.revoke_lease(lease))

    # -- watch ------------------------------------------------------------------------------

    async def wait_change(self, key: str, after_revision: int, deadline: float) -> bool:
        """Wait up to `deadline` s for `key` to change after `after_revision`. True if it did.

        A watch is only a shortcut: callers poll on False, so a watch stream lost to an
        etcd restart costs at most one deadline.
        """
        client = self._client

        async def watch_once() -> bool:
            await client.connect()
            watch = await client.watch(key.encode(), start_revision=after_revision + 1)
            try:
                async for _ in watch:
                    return True
            finally:
                await self._quietly(watch.cancel())
            return False

        try:
            return await self._bounded(watch_once(), deadline)
        except TimeoutError:
            return False
        except (
            _ForeignCancelError,
            aetcd.exceptions.ClientError,
            grpc.RpcError,
            _GRPC_BASE,
        ) as exc:
            raise EtcdUnavailableError(f"etcd watch {key} failed: {exc}") from exc


class _AuthExpiredError(Exception):
    """etcd no longer knows our auth token (it restarted): authenticate again."""


def _code(exc: BaseException) -> Any:
    """The gRPC status code behind an aetcd or gRPC error; None for a timeout."""
    cause = exc if isinstance(exc, grpc.aio.AioRpcError) else exc.__cause__
    return cause.code() if isinstance(cause, grpc.aio.AioRpcError) else None


def _is_outage(exc: BaseException) -> bool:
    """A timeout or a transport failure, as opposed to etcd answering no."""
    code = _code(exc)
    # No status code to go by (a timeout, a bare client error): an outage, so nobody acts.
    return code is None or code in _OUTAGE_CODES


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode(),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _compare(c: _Client, x: Compare) -> Any:
    target = {"create": c.transactions.create, "mod": c.transactions.mod}.get(
        x.target, c.transactions.version
    )(x.key.encode())
    ops: dict[str, Callable[[Any, int], Any]] = {
        "==": lambda t, v: t == v,
        "!=": lambda t, v: t != v,
        "<": lambda t, v: t < v,
        ">": lambda t, v: t > v,
    }
    return ops[x.op](target, x.value)


def _op(c: _Client, op: Put | Delete) -> Any:
    if isinstance(op, Put):
        return aetcd.transactions.Put(op.key.encode(), op.value, lease=op.lease or None)
    return aetcd.transactions.Delete(op.key.encode())


def _forget(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    """Drop a finished abandoned call, reading its outcome so asyncio does not warn."""

    def done(fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if not fut.cancelled():
            fut.exception()

    return done


class _ForeignCancelError(Exception):
    """A gRPC call raised CancelledError though nobody cancelled the caller."""


def _read_secret(path: Path) -> str:
    return path.read_text().strip()


# What closing or cancelling may raise: swallowed (best effort).
_QUIET = (
    TimeoutError,
    _ForeignCancelError,
    aetcd.exceptions.ClientError,
    grpc.RpcError,
    _GRPC_BASE,
)
