"""What the agent knows about its host: the `HostFacts` seam and its psutil implementation.

The sandbox supplies its own `HostFacts` (a simulated host whose disk it can fill);
`PsutilHost` reads the real machine. Methods are synchronous and quick; the server
calls them in a worker thread under a deadline, because a hung mount can block statvfs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import psutil

from drwatch.agent.wire import DiskUsage, Load, Memory

# Pseudo and virtual filesystems say nothing about whether a server can write its data.
_SKIP_FSTYPES = frozenset(
    {"tmpfs", "devtmpfs", "squashfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs"}
)


class HostFacts(Protocol):
    """The host's resources, as the agent reports them."""

    def disks(self) -> list[DiskUsage]: ...

    def memory(self) -> Memory: ...

    def cpu_percent(self) -> float: ...

    def load(self) -> Load: ...

    def uptime_s(self) -> float: ...


class PsutilHost:
    """The real host, read through psutil. `mounts` limits the disks reported (empty: all)."""

    def __init__(self, mounts: Sequence[str] = ()) -> None:
        self._mounts = tuple(mounts)
        # psutil's cpu_percent compares with the previous call; the first call primes it.
        psutil.cpu_percent(interval=None)

    def disks(self) -> list[DiskUsage]:
        out = []
        for mount in self._mounts or self._physical_mounts():
            try:
                usage = psutil.disk_usage(mount)
            except OSError:
                continue  # unmounted since we listed it; the next poll will tell
            out.append(
                DiskUsage(
                    mount=mount,
                    total_bytes=usage.total,
                    free_bytes=usage.free,
                    used_percent=usage.percent,
                )
            )
        return out

    @staticmethod
    def _physical_mounts() -> list[str]:
        parts = psutil.disk_partitions(all=False)
        return sorted({p.mountpoint for p in parts if p.fstype not in _SKIP_FSTYPES})

    def memory(self) -> Memory:
        mem = psutil.virtual_memory()
        return Memory(
            total_bytes=mem.total, available_bytes=mem.available, used_percent=mem.percent
        )

    def cpu_percent(self) -> float:
        return float(psutil.cpu_percent(interval=None))

    def load(self) -> Load:
        m1, m5, m15 = psutil.getloadavg()
        return Load(m1=m1, m5=m5, m15=m15)

    def uptime_s(self) -> float:
        return max(0.0, time.time() - psutil.boot_time())
