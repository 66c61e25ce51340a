"""The canary layer: endpoints outside every watched cloud.

A canary answers the question "can drwatch itself still reach the internet?". Any HTTP
answer, whatever its status, proves the path works, so a URL canary is UP on any
response; only no answer (timeout, refused, network error) counts against it. When
every canary fails, assess blames the watcher's own network, not the fleet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from drwatch.config import Canary, LayerTiming
from drwatch.model.fleet import Fleet
from drwatch.model.observation import Layer, Observation
from drwatch.observe.scheduler import CheckJob
from drwatch.probes.http import HttpCheck, HttpConditions
from drwatch.probes.result import ProbeResult
from drwatch.probes.tcp import TcpCheck

# An empty status list accepts every status: the answer itself is the proof.
ANY_ANSWER = HttpConditions(expect_status=())


class CanaryObserver:
    """One CANARY job per configured canary (url or tcp)."""

    def __init__(
        self, canaries: Sequence[Canary], timing: LayerTiming, http: HttpCheck, tcp: TcpCheck
    ) -> None:
        self._canaries = tuple(canaries)
        self._timing = timing
        self._http = http
        self._tcp = tcp

    def jobs_for(self, fleet: Fleet) -> dict[str, CheckJob]:
        """The jobs; canaries do not depend on the fleet, the argument keeps observers alike."""
        del fleet
        jobs = (self._job(c) for c in self._canaries)
        return {j.key: j for j in jobs}

    def _job(self, canary: Canary) -> CheckJob:
        async def run() -> Observation:
            attempted_at = time.time()
            result = await self.check(canary)
            return result.observation(canary.name, Layer.CANARY, attempted_at)

        t = self._timing
        key = f"canary:{canary.name}"
        return CheckJob(key, t.interval, t.timeout, run, Layer.CANARY, canary.name)

    async def check(self, canary: Canary) -> ProbeResult:
        timeout = self._timing.timeout
        if canary.url is not None:
            return await self._http.check(canary.url, ANY_ANSWER, timeout)
        host, _, port = (canary.tcp or "").rpartition(":")
        return await self._tcp.check(host.strip("[]"), int(port), timeout)
