"""Operator commands against a running daemon's API.

`drwatch status`, `drwatch incidents [ID]`, `drwatch approve ID`, `drwatch pause`,
`drwatch resume`, `drwatch backups`. Each takes `--api URL`, `--token-file PATH` and `--json` (print
the API's JSON as-is). Exit codes: 0 ok; 1 the daemon could not be reached or failed;
2 bad input: a missing or wrong token, an unknown incident, a refused request.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drwatch.backup.render import render_backups
from drwatch.client import (
    AUTH_FILE_ENV,
    DEFAULT_API,
    ApiAuthError,
    ApiClient,
    ApiRequestError,
    ApiUnreachableError,
    read_token,
)
from drwatch.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
Call = Callable[[ApiClient, argparse.Namespace], Awaitable[Any]]
Render = Callable[[Any], str]


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--api",
        default=DEFAULT_API,
        metavar="URL",
        help=f"the daemon's API (watcher.listen; default {DEFAULT_API})",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the API token (watcher.api_token_file; or ${AUTH_FILE_ENV})",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON as-is")
    return p


def register(sub: Any) -> None:
    common = _common()
    p = sub.add_parser(
        "status", parents=[common], help="the watcher's state, health by layer, open incidents"
    )
    p.set_defaults(func=_command(lambda c, _a: c.status(), render_status))
    p = sub.add_parser(
        "incidents", parents=[common], help="recent incidents, or one incident with its steps"
    )
    p.add_argument("id", nargs="?", metavar="ID", help="show this incident in full")
    p.set_defaults(func=_command(_incidents, render_incidents))
    p = sub.add_parser(
        "approve", parents=[common], help="approve the playbook an incident is waiting for"
    )
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_command(lambda c, a: c.approve(a.id), _done("approved")))
    p = sub.add_parser(
        "pause", parents=[common], help="stop starting playbooks (detection goes on)"
    )
    p.set_defaults(func=_command(lambda c, _a: c.pause(), _done("paused")))
    p = sub.add_parser("resume", parents=[common], help="allow playbooks to start again")
    p.set_defaults(func=_command(lambda c, _a: c.resume(), _done("resumed")))
    p = sub.add_parser(
        "backups", parents=[common], help="backups per data class and location, and the RPO"
    )
    p.set_defaults(func=_command(lambda c, _a: c.backups(), render_backups))


async def _incidents(client: ApiClient, args: argparse.Namespace) -> Any:
    return await (client.incident(args.id) if args.id else client.incidents())


def _command(call: Call, render: Render) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_run(call, render, args))

    return run


async def _run(call: Call, render: Render, args: argparse.Namespace) -> int:
    try:
        client = ApiClient(args.api, read_token(args.token_file), by=_who())
        data = await call(client, args)
    except ConfigError as err:
        return _fail(EXIT_BAD_INPUT, "; ".join(err.problems))
    except ApiUnreachableError as err:
        return _fail(EXIT_FAILED, str(err))
    except ApiAuthError as err:
        return _fail(EXIT_BAD_INPUT, str(err))
    except ApiRequestError as err:
        return _fail(EXIT_FAILED if err.status >= 500 else EXIT_BAD_INPUT, str(err))
    print(json.dumps(data, indent=2, sort_keys=False) if args.json else render(data))
    return EXIT_OK


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _fail(code: int, message: str) -> int:
    print(f"drwatch: {message}", file=sys.stderr)
    return code


# -- readable output ------------------------------------------------------------------


def _when(value: Any) -> str:
    """API times are ISO 8601 UTC (or epoch seconds): shown as `2026-11-26 14:05:01Z`."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC).isoformat()
    if not isinstance(value, str) or not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _incident_list(data: Any) -> list[dict[str, Any]]:
    items = data.get("incidents", []) if isinstance(data, dict) else data
    return [i for i in items or [] if isinstance(i, dict)]


def _incident_line(inc: dict[str, Any]) -> str:
    where = inc.get("zone") or inc.get("region") or inc.get("scope_key") or ""
    targets = ", ".join(inc.get("target_names") or inc.get("targets") or [])
    verdict = inc.get("outcome") or inc.get("state") or ""
    parts = [
        str(inc.get("id", "?")),
        f"{inc.get('scope', '?')} {where}".strip(),
        str(inc.get("finding", "")),
        verdict,
        str(inc.get("playbook") or ""),
        targets,
    ]
    return "  ".join(p for p in parts if p)


def render_incidents(data: Any) -> str:
    if isinstance(data, dict) and "id" in data and "incidents" not in data:
        return render_incident(data)
    items = _incident_list(data)
    if not items:
        return "no incidents"
    return "\n".join(_incident_line(i) for i in items)


def _steps(inc: dict[str, Any]) -> list[str]:
    lines = []
    for step in inc.get("steps") or []:
        detail = f"  {step['detail']}" if step.get("detail") else ""
        lines.append(
            f"  {step.get('status', '?'):<8} {step.get('name', '?'):<28}"
            f" {_when(step.get('started_at'))} -> {_when(step.get('ended_at'))}{detail}"
        )
    return lines


def render_incident(inc: dict[str, Any]) -> str:
    lines = [_incident_line(inc), f"  opened {_when(inc.get('opened_at'))}"]
    if inc.get("closed_at"):
        lines.append(f"  closed {_when(inc.get('closed_at'))}")
    if inc.get("evidence"):
        lines.append(f"  evidence: {inc['evidence']}")
    for reason in inc.get("gate_reasons") or []:
        lines.append(f"  not acting: {reason}")
    if inc.get("detail"):
        lines.append(f"  {inc['detail']}")
    steps = _steps(inc)
    if steps:
        lines += ["steps:", *steps]
    return "\n".join(lines)


def _unhealthy(items: Any) -> str:
    bad = [f"{i.get('name')} {i.get('health')}" for i in items or [] if i.get("health") != "up"]
    return ", ".join(bad) or "all up"


def _watcher_line(data: dict[str, Any]) -> str:
    watcher = data.get("watcher") or {}
    flags = [
        f
        for f, on in (("PAUSED", watcher.get("paused")), ("dry run", watcher.get("dry_run")))
        if on
    ]
    reason = f" ({watcher['reason']})" if watcher.get("reason") else ""
    extra = f" [{', '.join(flags)}]" if flags else ""
    return f"drwatch {watcher.get('name', '?')}: {watcher.get('state', '?')}{reason}{extra}"


def render_status(data: Any) -> str:
    if not isinstance(data, dict):
        return json.dumps(data, indent=2)
    counts = data.get("counts") or {}
    lines = [
        _watcher_line(data),
        f"summary: {data.get('summary', '-')}",
        f"last tick: {_when(data.get('tick_at'))}  healthy: "
        f"{counts.get('healthy', '?')}/{counts.get('total', '?')}",
        f"zones: {_unhealthy(data.get('zones'))}",
        f"regions: {_unhealthy(data.get('regions'))}",
        f"canaries: {_unhealthy(data.get('canaries'))}",
    ]
    for f in data.get("findings") or []:
        lines.append(
            f"finding: {f.get('scope_key', '?')} {f.get('finding', '?')} - {f.get('evidence', '')}"
        )
    incidents = _incident_list(data.get("open_incidents", []))
    lines.append(f"open incidents: {len(incidents)}")
    lines += [f"  {_incident_line(i)}" for i in incidents]
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _done(verb: str) -> Render:
    def render(data: Any) -> str:
        message = data.get("message") if isinstance(data, dict) else None
        return str(message) if message else verb

    return render
