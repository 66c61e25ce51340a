"""`drwatch backups`: the API's backup document as lines an operator reads at a glance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drwatch.units import format_duration

RECENT_LINES = 10


def render_backups(data: Any) -> str:
    """Per class: its RPO, and per location the newest verified backup's age and verdict;
    then the findings and the most recent backups."""
    if not isinstance(data, dict):
        return "no backup document"
    lines: list[str] = []
    for cls in data.get("classes", []):
        lines.extend(_class_lines(cls))
    found = data.get("findings", [])
    lines.append(f"findings: {len(found)}")
    lines += [f"  {f.get('finding')}: {f.get('message')}" for f in found]
    recent = data.get("backups", [])[:RECENT_LINES]
    lines.append(f"recent backups: {len(data.get('backups', []))}")
    lines += [f"  {_backup_line(b)}" for b in recent]
    return "\n".join(lines)


def _class_lines(cls: dict[str, Any]) -> list[str]:
    name, kind = cls.get("data_class"), cls.get("class_kind")
    if not cls.get("backed_up"):
        return [f"{name} ({kind}): not backed up, on purpose"]
    out = [f"{name} ({kind}, RPO {_duration(cls.get('rpo_s'))})"]
    for loc in cls.get("locations", []):
        age = loc.get("age_s")
        newest = "no verified backup" if age is None else f"verified {_duration(age)} ago"
        verdict = "RPO BREACHED" if loc.get("breached") else "ok"
        if loc.get("failing"):
            verdict += f", FAILING ({loc.get('bad_in_a_row')} in a row)"
        out.append(f"  {loc.get('location', '?'):<15} {newest:<28} {verdict}")
    return out


def _backup_line(b: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(b.get("created_at", 0)), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    size = f"{int(b.get('size', 0)) / 2**20:.1f} MiB"
    why = f"  ({b['why']})" if b.get("why") and b.get("state") != "verified" else ""
    return (
        f"{when} {b.get('data_class')} {b.get('kind')} {b.get('location')}: "
        f"{b.get('state')} {size}{why}"
    )


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return format_duration(float(round(seconds)))
