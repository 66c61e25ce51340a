"""Durations and byte sizes as operators write them: `500ms`, `30s`, `5m`, `24h`, `7d`.

Neutral ground: the daemon and the agent both import this, and it imports nothing.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from `"30s"`-style text, or from a plain number of seconds.

    >>> parse_duration("1.5m")
    90.0
    """
    if isinstance(value, bool):
        raise ValueError("a duration is text like '30s', '5m' or '24h', not true/false")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative (got {value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"a duration is text like '30s', '5m' or '24h' (got {value!r})")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: use a number and one of ms, s, m, h, d (e.g. '30s')"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact form: 90.0 -> '90s', 300 -> '5m', 0.25 -> '250ms'."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
