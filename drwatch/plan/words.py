"""How the plan writes times and durations."""

from __future__ import annotations

from datetime import UTC, datetime

from drwatch.units import format_duration


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds % 1 else f"{seconds:.0f} s"
    return format_duration(round(seconds))


def plain(seconds: float) -> str:
    """`15 minutes`, `2 hours`, `182 days`: objectives in words."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"
