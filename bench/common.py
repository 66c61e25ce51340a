"""What every benchmark here shares: the machine it ran on, and how results come out."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp


def machine(**extra: Any) -> dict[str, Any]:
    """nproc, CPU model, Python and aiohttp versions, plus what the benchmark adds."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        **extra,
    }


def measure_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column markdown table: measure, value."""
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def emit(table: str, result: dict[str, Any], out: Path | None) -> None:
    """Print the table; with `--out`, write the numbers as JSON too."""
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
