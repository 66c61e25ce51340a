"""The daemon's memory of recent agent samples, per instance, for the trend rules.

Fed with every AGENT observation (only successful ones carry facts); bounded twice:
at most `max_samples` per instance and nothing older than `window`. Instances that
leave the fleet are forgotten. Not thread-safe: one event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from drwatch.model.fleet import Fleet
from drwatch.model.observation import Health, Layer, Observation
from drwatch.model.samples import DiskSample, History, Sample


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _disks(raw: Any) -> tuple[DiskSample, ...]:
    if not isinstance(raw, Mapping):
        return ()
    out = []
    for mount, d in sorted(raw.items()):
        if not isinstance(d, Mapping):
            continue
        total, free = _num(d.get("total_bytes")), _num(d.get("free_bytes"))
        if total is None or free is None or total <= 0:
            continue
        out.append(DiskSample(str(mount), int(total), int(max(0.0, total - free))))
    return tuple(out)


def sample_from(obs: Observation) -> Sample | None:
    """The numbers in an agent observation's facts (docs/agent.md), or None without any."""
    if obs.layer is not Layer.AGENT or obs.health is not Health.UP or not obs.detail:
        return None
    facts = obs.detail
    memory = facts.get("memory")
    at = _num(facts.get("collected_at"))
    sample = Sample(
        # The agent's own clock says when the numbers were true; our attempt if it is absent
        # or far off (a skewed host clock must not bend the fit).
        at=at if at is not None and abs(at - obs.attempted_at) < 60 else obs.attempted_at,
        cpu_percent=_num(facts.get("cpu_percent")),
        memory_percent=_num(memory.get("used_percent")) if isinstance(memory, Mapping) else None,
        disks=_disks(facts.get("disks")),
    )
    if sample.cpu_percent is None and sample.memory_percent is None and not sample.disks:
        return None
    return sample


class SampleHistory:
    """Recent samples per instance id."""

    def __init__(self, window: float, max_samples: int) -> None:
        self.window = window
        self.max_samples = max_samples
        self._by_id: dict[str, deque[Sample]] = {}

    def record(self, obs: Observation) -> None:
        sample = sample_from(obs)
        if sample is None:
            return
        kept = self._by_id.get(obs.target)
        if kept is None:
            kept = self._by_id[obs.target] = deque(maxlen=self.max_samples)
        if kept and sample.at <= kept[-1].at:
            return  # the same facts twice (a cached answer), or out of order
        kept.append(sample)

    def prune(self, fleet: Fleet) -> None:
        for gone in [i for i in self._by_id if fleet.get(i) is None]:
            del self._by_id[gone]

    def view(self, now: float) -> History:
        """A frozen copy of the samples within the window, oldest first."""
        since = now - self.window
        out = {}
        for iid, kept in self._by_id.items():
            while kept and kept[0].at < since:
                kept.popleft()
            if kept:
                out[iid] = tuple(kept)
        return MappingProxyType(out)
