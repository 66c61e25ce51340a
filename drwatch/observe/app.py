"""The app layer: per-instance health endpoints, and each load balancer's service URL.

`AppObserver.jobs_for(fleet)` turns the fleet and the groups' `checks` into scheduler
jobs. An instance's checks run together and combine into one APP observation, the
worst wins (DOWN over UNKNOWN over UP). Addresses: the instance tag `drwatch:app-addr`
(`host:port`, overriding host and port of every check) else its private ip and the
check's port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from drwatch.config import AppCheck, CheckKind, GroupConfig, LayerTiming
from drwatch.model.fleet import Fleet, Instance
from drwatch.model.observation import Health, Layer, Observation
from drwatch.observe.scheduler import CheckJob, CheckRun
from drwatch.probes.http import HttpCheck, HttpConditions
from drwatch.probes.result import ProbeResult
from drwatch.probes.tcp import TcpCheck

APP_ADDR_TAG = "drwatch:app-addr"
_SEVERITY = {Health.UP: 0, Health.UNKNOWN: 1, Health.DOWN: 2}
# The service through its load balancer: status 200, nothing more.
SERVICE_OK = HttpConditions()


def conditions(check: AppCheck) -> HttpConditions:
    """The probe's view of a configured check."""
    json_field = check.json_field
    return HttpConditions(
        expect_status=tuple(check.expect_status),
        body_contains=check.body_contains,
        json_path=json_field.path if json_field else None,
        json_equals=json_field.equals if json_field else None,
        max_latency=check.max_latency,
        insecure_tls=check.insecure_tls,
    )


def endpoint(instance: Instance, check: AppCheck) -> tuple[str, int] | None:
    """(host, port) of `check` on `instance`, or None when it has no address."""
    override = instance.tag(APP_ADDR_TAG)
    if override:
        host, _, port = override.rpartition(":")
        if host and port.isdigit():
            return host.strip("[]"), int(port)
    if instance.private_ip:
        return instance.private_ip, check.port
    return None


def check_url(check: AppCheck, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{check.kind}://{shown}:{port}{check.path}"


def worst(results: Sequence[tuple[str, ProbeResult]]) -> ProbeResult:
    """One verdict from several named checks: the worst health; its reasons, named."""
    health = max((r.health for _, r in results), key=_SEVERITY.__getitem__)
    reasons = [f"{name}: {r.reason}" for name, r in results if r.health is health and r.reason]
    latencies = [r.latency_s for _, r in results if r.latency_s is not None]
    return ProbeResult(health, "; ".join(reasons), latency_s=max(latencies, default=None))


class AppObserver:
    """Builds APP jobs (one per instance of a group with checks) and SERVICE jobs (one per
    load-balancer group with a `service_url`)."""

    def __init__(
        self,
        groups: Sequence[GroupConfig],
        timing: LayerTiming,
        http: HttpCheck,
        tcp: TcpCheck,
    ) -> None:
        self._groups = {g.name: g for g in groups}
        self._timing = timing
        self._http = http
        self._tcp = tcp

    def jobs_for(self, fleet: Fleet) -> dict[str, CheckJob]:
        jobs: dict[str, CheckJob] = {}
        for instance in fleet:
            group = self._groups.get(instance.group)
            if group is not None and group.checks:
                job = self._instance_job(instance, tuple(group.checks))
                jobs[job.key] = job
        for group in self._groups.values():
            if group.service_url:
                job = self._service_job(group.name, group.service_url)
                jobs[job.key] = job
        return jobs

    def _instance_job(self, instance: Instance, checks: tuple[AppCheck, ...]) -> CheckJob:
        # URLs and conditions are built once per discovery, not once per check.
        planned = tuple(self._plan(instance, c) for c in checks)

        async def run() -> Observation:
            attempted_at = time.time()
            result = await self._run_planned(planned)
            return result.observation(instance.id, Layer.APP, attempted_at)

        return self._job(f"app:{instance.id}", Layer.APP, instance.id, run)

    def _service_job(self, group: str, url: str) -> CheckJob:
        async def run() -> Observation:
            attempted_at = time.time()
            result = await self._http.check(url, SERVICE_OK, self._timing.timeout)
            return result.observation(group, Layer.SERVICE, attempted_at)

        return self._job(f"service:{group}", Layer.SERVICE, group, run)

    def _job(self, key: str, layer: Layer, target: str, run: CheckRun) -> CheckJob:
        t = self._timing
        return CheckJob(key, t.interval, t.timeout, run, layer, target)

    def _plan(self, instance: Instance, check: AppCheck) -> _Planned:
        addr = endpoint(instance, check)
        if addr is None:
            return _Planned(check.name, check.kind, None, 0, "", HttpConditions())
        host, port = addr
        return _Planned(
            check.name, check.kind, host, port, check_url(check, host, port), conditions(check)
        )

    async def _run_planned(self, planned: tuple[_Planned, ...]) -> ProbeResult:
        """Run every check of the instance (concurrently when several) and combine them."""
        if len(planned) == 1:
            return await self._run_one(planned[0])
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._run_one(p)) for p in planned]
        return worst([(p.name, t.result()) for p, t in zip(planned, tasks, strict=True)])

    async def _run_one(self, p: _Planned) -> ProbeResult:
        if p.host is None:
            return ProbeResult(Health.UNKNOWN, "no address: no private ip and no app-addr tag")
        timeout = self._timing.timeout
        if p.kind is CheckKind.TCP:
            return await self._tcp.check(p.host, p.port, timeout)
        return await self._http.check(p.url, p.cond, timeout)


@dataclass(frozen=True, slots=True)
class _Planned:
    """One check of one instance, resolved: where it goes and what a good answer is."""

    name: str
    kind: CheckKind
    host: str | None
    port: int
    url: str
    cond: HttpConditions
