"""Recent agent samples, as numbers over time: the input of the trend rules.

One `Sample` per successful agent poll: when the agent collected it, CPU and memory
use, and each disk's size and use. The daemon keeps a bounded history per instance
(drwatch.observe.samples); assess reads it frozen, with `now` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DiskSample:
    mount: str
    total_bytes: int
    used_bytes: int

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    cpu_percent: float | None = None
    memory_percent: float | None = None
    disks: tuple[DiskSample, ...] = ()

    def disk(self, mount: str) -> DiskSample | None:
        for d in self.disks:  # a loop, not next(genexpr): this runs per sample per pass
            if d.mount == mount:
                return d
        return None


@dataclass(frozen=True, slots=True)
class VolumeState:
    """A volume as the provider reports it: `state` from DescribeVolumes (`error` is a
    failed volume), `status` from DescribeVolumeStatus (`ok`, `impaired`, `warning`,
    `insufficient-data`; empty when the provider did not say)."""

    id: str
    region: str
    state: str
    attached_to: str | None = None
    status: str = ""


# instance id -> its samples, oldest first
History = Mapping[str, tuple[Sample, ...]]
