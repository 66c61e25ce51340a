"""Simulated hosts: per instance, one agent and one application endpoint on loopback.

A `SimHost` is the sandbox's model of one server: its resources (`HostFacts` for the
real agent code), its local checks (the database role and integrity), the allow-listed
actions the playbooks call, and the faults on it. `sync()` makes the two listeners
match what the host should look like from outside: answering, silent, or hanging.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp
from aiohttp import web

from drwatch.agent.wire import CheckResult, DiskUsage, Load, Memory, Status
from drwatch.logs import get_logger
from drwatch.model.fleet import Role
from drwatch.sandbox.listener import (
    INTERNAL_HEADER,
    Gate,
    Listener,
    gate_middleware,
    hang,
    outside_gate_middleware,
)

log = get_logger(component="sandbox.host")

DISK_TOTAL = 100 * 1024**3
MEMORY_TOTAL = 4 * 1024**3
# An LB gives up on a backend after this and tries the next one.
BACKEND_TIMEOUT_S = 0.4


class AppMode(StrEnum):
    OK = "ok"
    FAIL = "fail"  # 500
    HANG = "hang"  # accepts, never answers
    SLOW = "slow"  # answers after `delay`
    FLAP = "flap"  # alternates ok / 500 every `period`


@dataclass
class UserData:
    """What an instance is told at boot (docs/sandbox.md: `KEY=value` lines)."""

    database: str | None = None
    backends: list[str] = field(default_factory=list)
    db_role: str | None = None
    primary: str | None = None

    @classmethod
    def parse(cls, text: str) -> UserData:
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
        backends = [b for b in values.get("DRWATCH_BACKENDS", "").split(",") if b]
        return cls(
            database=values.get("DRWATCH_DB") or None,
            backends=backends,
            db_role=values.get("DRWATCH_DB_ROLE") or None,
            primary=values.get("DRWATCH_DB_PRIMARY") or None,
        )


@dataclass
class HostFaults:
    """Faults that live on the host itself (the provider-side ones live at the front)."""

    silenced_by: set[str] = field(default_factory=set)  # stopped, impaired, zone:..., region:...
    agent_killed: bool = False
    app_mode: AppMode = AppMode.OK
    app_delay_s: float = 0.0
    app_period_s: float = 2.0
    disk_percent: float | None = None
    # grow-disk: (when it began, the use then in percent, percent per minute)
    disk_growth: tuple[float, float, float] | None = None


class SimHost:
    """One simulated server. Implements the agent's `HostFacts` protocol."""

    def __init__(
        self,
        *,
        name: str,
        instance_id: str,
        role: Role,
        agent_port: int,
        app_port: int,
        uplink: Gate,
        resolve: Callable[[str], str | None],
        corrupt: Callable[[str], bool],
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.name = name
        self.instance_id = instance_id
        self.role = role
        self.user_data = UserData()
        self.faults = HostFaults()
        self.booted = False
        self.boots = 0
        self.booted_at = time.time()
        self._uplink = uplink
        self._resolve = resolve
        self._corrupt = corrupt
        self._session = session
        self._app_ok = asyncio.Event()
        self._app_ok.set()
        self._rr = itertools.count()
        self._blocked: set[int] = set()  # ports another process holds (logged once)
        # The watchers' own path to this host (partition-zone cuts it): requests from
        # inside the sandbox (the load balancer's proxy) carry INTERNAL_HEADER and pass.
        self.watcher_path = Gate()
        self.agent = Listener(agent_port, self._agent_app)
        self.app = Listener(app_port, self._app_app)
        # Set by the agent plug: how the agent's web app is built for this host.
        self.agent_factory: Callable[[SimHost], web.Application] | None = None

    # --- what the host looks like from outside --------------------------------------------

    @property
    def agent_addr(self) -> str:
        return self.agent.address

    @property
    def app_addr(self) -> str:
        return self.app.address

    @property
    def silent(self) -> bool:
        return not self.booted or bool(self.faults.silenced_by)

    async def sync(self) -> None:
        """Open or close the two ports so they match the host's state and faults."""
        wanted = (
            (self.app, not self.silent),
            (self.agent, not self.silent and not self.faults.agent_killed),
        )
        for listener, running in wanted:
            try:
                await listener.set_running(running)
                self._blocked.discard(listener.port)
            except OSError as err:
                # Another process took the port while the host was silent: this host stays
                # down (as a real one whose address was taken would); the next sync retries.
                if listener.port not in self._blocked:
                    self._blocked.add(listener.port)
                    log.warning(
                        "host.port_unavailable", host=self.name, port=listener.port, error=str(err)
                    )

    async def close(self) -> None:
        await self.agent.stop()
        await self.app.stop()

    def boot(self, user_data: UserData) -> None:
        self.user_data = user_data
        self.booted = True
        self.boots += 1
        self.booted_at = time.time()
        log.info("host.boot", host=self.name, instance=self.instance_id)

    def set_app_mode(self, mode: AppMode) -> None:
        self.faults.app_mode = mode
        if mode is AppMode.HANG:
            self._app_ok.clear()
        else:
            self._app_ok.set()

    # --- HostFacts ------------------------------------------------------------------------

    def disk_percent(self) -> float:
        """35% unless a fault says otherwise; grow-disk adds its rate, up to full."""
        percent = self.faults.disk_percent if self.faults.disk_percent is not None else 35.0
        if self.faults.disk_growth is not None:
            began, start, rate = self.faults.disk_growth
            percent = start + rate * max(0.0, time.time() - began) / 60.0
        return min(100.0, percent)

    def disks(self) -> list[DiskUsage]:
        percent = self.disk_percent()
        free = int(DISK_TOTAL * (100.0 - percent) / 100.0)
        return [DiskUsage(mount="/", total_bytes=DISK_TOTAL, free_bytes=free, used_percent=percent)]

    def memory(self) -> Memory:
        return Memory(
            total_bytes=MEMORY_TOTAL, available_bytes=MEMORY_TOTAL // 2, used_percent=50.0
        )

    def cpu_percent(self) -> float:
        return 12.0

    def load(self) -> Load:
        return Load(m1=0.2, m5=0.2, m15=0.2)

    def uptime_s(self) -> float:
        return max(0.0, time.time() - self.booted_at)

    # --- local checks and actions (the agent plug exposes them) ---------------------------

    def database_check(self) -> CheckResult:
        """Role, replication lag and integrity; critical when the data is corrupt."""
        role = self.user_data.db_role or "primary"
        corrupt = self._corrupt(self.instance_id)
        return CheckResult(
            name="database",
            kind="database",
            status=Status.CRITICAL if corrupt else Status.OK,
            detail="data corrupt" if corrupt else f"{role}, integrity ok",
            data={"role": role, "lag_s": 0.0, "integrity": "corrupt" if corrupt else "ok"},
        )

    def checks(self) -> list[CheckResult]:
        return [self.database_check()] if self.role is Role.DATABASE else []

    def act(self, action: str, params: dict[str, str]) -> dict[str, object]:
        """The allow-listed actions (docs/sandbox.md). Raises ValueError on bad input."""
        handler = ACTIONS.get(action)
        if handler is None:
            raise ValueError(f"unknown action {action!r}")
        result = handler(self, params)
        log.info("host.action", host=self.name, action=action, params=params)
        return result

    # --- the application endpoint ---------------------------------------------------------

    def _agent_app(self) -> web.Application:
        if self.agent_factory is None:
            raise RuntimeError("no agent plugged in")
        app = self.agent_factory(self)
        app.middlewares.insert(0, gate_middleware(self._uplink))
        app.middlewares.insert(1, outside_gate_middleware(self.watcher_path))
        return app

    def _app_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                gate_middleware(self._uplink),
                outside_gate_middleware(self.watcher_path),
            ]
        )
        app.router.add_get("/healthz", self._healthz)
        if self.role is Role.LOAD_BALANCER:
            app.router.add_route("*", "/app/{tail:.*}", self._proxy)
        return app

    async def _healthz(self, _request: web.Request) -> web.StreamResponse:
        mode = self.faults.app_mode
        if mode is AppMode.HANG:
            await hang(self._app_ok)
        elif mode is AppMode.SLOW:
            await asyncio.sleep(self.faults.app_delay_s)
        if mode is AppMode.FAIL or (mode is AppMode.FLAP and self._flap_down()):
            return web.json_response({"status": "failing", "host": self.name}, status=500)
        body: dict[str, object] = {"status": "ok", "host": self.name}
        if self.user_data.database:
            body["database"] = self.user_data.database
        return web.json_response(body)

    def _flap_down(self) -> bool:
        return int(time.time() / max(self.faults.app_period_s, 0.1)) % 2 == 1

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        """The load balancer: forward `/app/<path>` to the next backend that answers 200."""
        backends = list(self.user_data.backends)
        start = next(self._rr)
        for i in range(len(backends)):
            addr = self._resolve(backends[(start + i) % len(backends)])
            answer = await self._try_backend(addr, request.match_info["tail"]) if addr else None
            if answer is not None:
                return web.json_response({**answer, "via": self.name})
        return web.json_response({"status": "no healthy backend", "via": self.name}, status=502)

    async def _try_backend(self, addr: str, tail: str) -> dict[str, object] | None:
        try:
            async with self._session().get(
                f"http://{addr}/{tail}",
                timeout=aiohttp.ClientTimeout(total=BACKEND_TIMEOUT_S),
                headers={INTERNAL_HEADER: "1"},
            ) as resp:
                if resp.status != 200:
                    return None
                body: dict[str, object] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None


def _register_backend(host: SimHost, params: dict[str, str]) -> dict[str, object]:
    backend = _required(params, "address")
    if backend not in host.user_data.backends:
        host.user_data.backends.append(backend)
    return {"backends": list(host.user_data.backends)}


def _deregister_backend(host: SimHost, params: dict[str, str]) -> dict[str, object]:
    backend = _required(params, "address")
    host.user_data.backends = [b for b in host.user_data.backends if b != backend]
    return {"backends": list(host.user_data.backends)}


def _promote(host: SimHost, _params: dict[str, str]) -> dict[str, object]:
    if host.role is not Role.DATABASE:
        raise ValueError("promote: this host is not a database")
    previous = host.user_data.db_role or "primary"
    host.user_data.db_role = "primary"
    host.user_data.primary = None
    return {"role": "primary", "previous_role": previous}


def _set_database(host: SimHost, params: dict[str, str]) -> dict[str, object]:
    host.user_data.database = _required(params, "address")
    return {"database": host.user_data.database}


def _required(params: dict[str, str], key: str) -> str:
    value = params.get(key, "").strip()
    if not value:
        raise ValueError(f"missing parameter {key!r}")
    return value


ACTIONS: dict[str, Callable[[SimHost, dict[str, str]], dict[str, object]]] = {
    "register_backend": _register_backend,
    "deregister_backend": _deregister_backend,
    "promote": _promote,
    "set_database": _set_database,
}
