"""Local checks: small objects with `async def run() -> CheckResult`, kept in a registry.

The registry is a plain `dict[str, Check]` keyed by check name. `build_checks` makes
the real ones from the agent's config; the sandbox passes its own (a simulated
`database` check, for one). `run_checks` runs them all at once, each under a deadline,
and turns a timeout or an exception into `unknown`: a broken check never breaks facts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol

import aiohttp
import psutil

from drwatch.agent.config import (
    AgentConfig,
    CheckConfig,
    DiskFreeCheckConfig,
    HttpCheckConfig,
    PostgresCheckConfig,
    ProcessCheckConfig,
    TcpCheckConfig,
)
from drwatch.agent.postgres import Postgres, PostgresCheck
from drwatch.agent.wire import CheckResult, Status
from drwatch.fields import split_host_port
from drwatch.units import format_duration

MAX_DETAIL = 500


class Check(Protocol):
    """One local check. `kind` names what it looks at (http, tcp, process, database...)."""

    @property
    def kind(self) -> str: ...

    async def run(self) -> CheckResult: ...


def latency_status(latency: float, warning: float | None, critical: float | None) -> Status:
    if critical is not None and latency >= critical:
        return Status.CRITICAL
    if warning is not None and latency >= warning:
        return Status.WARNING
    return Status.OK


class HttpCheck:
    """GET a URL; the status code must be one of `expect_status`."""

    kind = "http"

    def __init__(self, cfg: HttpCheckConfig, session: aiohttp.ClientSession) -> None:
        self._cfg = cfg
        self._session = session

    async def run(self) -> CheckResult:
        cfg = self._cfg
        start = time.monotonic()
        try:
            async with self._session.get(cfg.url, allow_redirects=False) as resp:
                code = resp.status
        except aiohttp.ClientError as err:
            return CheckResult(cfg.name, self.kind, Status.CRITICAL, f"request failed: {err}")
        latency = time.monotonic() - start
        data = {"status_code": code, "latency_s": round(latency, 6)}
        if code not in cfg.expect_status:
            detail = f"status {code}, expected {', '.join(map(str, cfg.expect_status))}"
            return CheckResult(cfg.name, self.kind, Status.CRITICAL, detail, data)
        status = latency_status(latency, cfg.warning_latency, cfg.critical_latency)
        return CheckResult(cfg.name, self.kind, status, f"status {code} in {latency:.3f}s", data)


class TcpCheck:
    """Open a TCP connection to host:port and close it."""

    kind = "tcp"

    def __init__(self, cfg: TcpCheckConfig) -> None:
        self._cfg = cfg

    async def run(self) -> CheckResult:
        cfg = self._cfg
        host, port = split_host_port(cfg.address)
        start = time.monotonic()
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as err:
            detail = f"connect to {cfg.address} failed: {err.strerror or err}"
            return CheckResult(cfg.name, self.kind, Status.CRITICAL, detail)
        latency = time.monotonic() - start
        writer.close()
        await writer.wait_closed()
        status = latency_status(latency, cfg.warning_latency, cfg.critical_latency)
        data = {"latency_s": round(latency, 6)}
        return CheckResult(cfg.name, self.kind, status, f"connected in {latency:.3f}s", data)


class ProcessCheck:
    """Count processes whose name is exactly `process`."""

    kind = "process"

    def __init__(self, cfg: ProcessCheckConfig) -> None:
        self._cfg = cfg

    async def run(self) -> CheckResult:
        cfg = self._cfg
        count = await asyncio.to_thread(count_processes, cfg.process)
        status = Status.OK if count >= cfg.min_count else Status.CRITICAL
        detail = f"{count} process(es) named {cfg.process!r}, want at least {cfg.min_count}"
        return CheckResult(cfg.name, self.kind, status, detail, {"count": count})


def count_processes(name: str) -> int:
    return sum(1 for p in psutil.process_iter(["name"]) if p.info.get("name") == name)


class DiskFreeCheck:
    """Free space on the filesystem that holds `path`."""

    kind = "disk_free"

    def __init__(self, cfg: DiskFreeCheckConfig) -> None:
        self._cfg = cfg

    async def run(self) -> CheckResult:
        cfg = self._cfg
        try:
            usage = await asyncio.to_thread(psutil.disk_usage, str(cfg.path))
        except OSError as err:
            detail = f"cannot stat {cfg.path}: {err.strerror or err}"
            return CheckResult(cfg.name, self.kind, Status.UNKNOWN, detail)
        free_percent = 100.0 * usage.free / usage.total if usage.total else 0.0
        status = Status.OK
        if free_percent <= cfg.critical_free_percent:
            status = Status.CRITICAL
        elif free_percent <= cfg.warning_free_percent:
            status = Status.WARNING
        data = {"free_percent": round(free_percent, 2), "free_bytes": usage.free}
        detail = f"{free_percent:.1f}% free on {cfg.path}"
        return CheckResult(cfg.name, self.kind, status, detail, data)


def build_check(
    cfg: CheckConfig, session: aiohttp.ClientSession, pg: Postgres | None, timeout: float
) -> Check:
    match cfg:
        case HttpCheckConfig():
            return HttpCheck(cfg, session)
        case TcpCheckConfig():
            return TcpCheck(cfg)
        case ProcessCheckConfig():
            return ProcessCheck(cfg)
        case DiskFreeCheckConfig():
            return DiskFreeCheck(cfg)
        case PostgresCheckConfig():
            if pg is None:  # the config's validation already refuses this
                raise ValueError(f"check {cfg.name}: a postgres check needs [postgres]")
            check = PostgresCheck(cfg, pg, timeout)
            check.start()
            return check


def build_checks(
    cfg: AgentConfig, session: aiohttp.ClientSession, pg: Postgres | None = None
) -> dict[str, Check]:
    """The registry of the checks the config names, in config order. A `postgres` check
    runs on `pg` (the agent's `Postgres`, running) and starts its amcheck sweep."""
    return {c.name: build_check(c, session, pg, cfg.check_timeout) for c in cfg.checks}


async def run_check(name: str, check: Check, timeout_s: float) -> CheckResult:
    """One check's result; a timeout or a crash is `unknown`, with the reason."""
    try:
        async with asyncio.timeout(timeout_s):
            result = await check.run()
    except TimeoutError:
        detail = f"timeout after {format_duration(timeout_s)}"
        return CheckResult(name, check.kind, Status.UNKNOWN, detail)
    except Exception as err:  # a broken check must not break the facts
        return CheckResult(name, check.kind, Status.UNKNOWN, f"check failed: {err!r}"[:MAX_DETAIL])
    return CheckResult(name, result.kind, result.status, result.detail[:MAX_DETAIL], result.data)


async def run_checks(checks: Mapping[str, Check], timeout_s: float) -> dict[str, CheckResult]:
    """Every check at once, each within `timeout_s` seconds; results keyed by check name."""
    async with asyncio.TaskGroup() as tg:
        tasks = {name: tg.create_task(run_check(name, c, timeout_s)) for name, c in checks.items()}
    return {name: task.result() for name, task in tasks.items()}
