"""Durations and byte sizes as operators write them: `500ms`, `30s`, `5m`, `24h`, `7d`.

Neutral ground: the daemon and the agent both import this, and it imports nothing.
"""

from __future__ import annotations

import math
import re

# Bounded digit counts: a pasted wall of digits is refused by the pattern, not converted.
_DURATION = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Ten years. Every duration drwatch reads (intervals, cooldowns, objectives, retention,
# drill times) is far below this; anything above is a typo, and past it timestamps
# (`now + cooldown`) stop being representable as dates.
MAX_DURATION_S = 3650 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from `"30s"`-style text, or from a plain number of seconds.

    The result is always finite, at least 0 and at most MAX_DURATION_S (ten years).

    >>> parse_duration("1.5m")
    90.0
    """
    if isinstance(value, bool):
        raise ValueError("a duration is text like '30s', '5m' or '24h', not true/false")
    if isinstance(value, int | float):
        return _in_range(value, repr(value))
    if not isinstance(value, str):
        raise ValueError(f"a duration is text like '30s', '5m' or '24h' (got {value!r})")
    match = _DURATION.match(value)
    if match is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(
            f"{shown!r} is not a duration: use a number and one of ms, s, m, h, d (e.g. '30s')"
        )
    return _in_range(float(match.group(1)) * _UNITS[match.group(2)], repr(value))


def _in_range(value: float, shown: str) -> float:
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if math.isnan(seconds):
        raise ValueError("a duration must be a number of seconds, not nan")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative (got {shown})")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be at most 3650d (ten years) (got {shown[:40]})")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 90.0 -> '90s', 300 -> '5m', 0.25 -> '250ms'."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
