"""`drwatch sandbox [fault|heal]` and `drwatch drill`.

drwatch sandbox [--topology FILE] [--state-dir DIR]
drwatch sandbox fault VERB TARGET [--delay D] [--percent P] [--period D]
drwatch sandbox heal TARGET
drwatch drill SCENARIO.toml --sandbox --report REPORT.json [--topology FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from drwatch import config as config_mod
from drwatch import logs
from drwatch.config import AlertsConfig
from drwatch.errors import ConfigError
from drwatch.ledger import record_report
from drwatch.sandbox import control
from drwatch.sandbox.cloud import SandboxError
from drwatch.sandbox.daemon_api import DaemonApi
from drwatch.sandbox.drill import run_drill, write_report
from drwatch.sandbox.faults import VERBS
from drwatch.sandbox.pgcluster import PG_BIN, PgError, pg_bin_dir
from drwatch.sandbox.scenario import Scenario, load_scenario
from drwatch.sandbox.topology import Topology, default_topology, load_topology
from drwatch.sandbox.verdict import summary
from drwatch.sandbox.world import STATE_FILE, Options, Sandbox

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_STATE_DIR = Path(".drwatch-sandbox")
API_DEADLINE_S = 30.0
T = TypeVar("T")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sandbox",
        help="run a simulated multi-region AWS with the real daemon watching it",
        description=(
            "Start moto, a fault-injecting front, simulated agents and apps for every "
            "instance, canaries, and `drwatch run` against them; run until Ctrl-C/SIGTERM."
        ),
    )
    p.add_argument("--topology", type=Path, metavar="FILE", help="another topology (TOML)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR")
    p.add_argument(
        "--alertmanager",
        action="append",
        default=[],
        metavar="URL",
        help="an Alertmanager (e.g. http://127.0.0.1:9093) the daemon sends alerts to; repeatable",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="run real PostgreSQL 15 behind db-1 (primary), db-2 and db-3 (replicas)",
    )
    p.add_argument(
        "--no-backups",
        action="store_true",
        help="leave backups off (by default the sandbox backs up every data class)",
    )
    p.add_argument(
        "--watcher-key",
        action="store_true",
        help="give the watcher its own copy of the backup key's private half",
    )
    p.set_defaults(func=cmd_sandbox)
    actions = p.add_subparsers(dest="sandbox_command", metavar="ACTION")
    f = actions.add_parser("fault", help="inject a fault into a running sandbox")
    f.add_argument("verb", choices=sorted(VERBS), metavar="VERB")
    f.add_argument("target", metavar="TARGET")
    f.add_argument("--delay", help="slow-app, kill-watcher, lag-replica: e.g. 2s")
    f.add_argument("--period", help="flap-app: e.g. 2s")
    f.add_argument("--percent", type=float, help="fill-disk: 0-100")
    f.add_argument("--rate", type=float, help="grow-disk: percent per minute")
    f.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR")
    f.set_defaults(func=cmd_fault)
    h = actions.add_parser("heal", help="undo every fault on a target")
    h.add_argument("target", metavar="TARGET")
    h.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR")
    h.set_defaults(func=cmd_heal)

    d = sub.add_parser(
        "drill",
        help="run a drill scenario against a fresh sandbox and write a report",
        description="Exit 0: every expectation met; 1: not met; 2: bad input.",
    )
    d.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--sandbox", action="store_true", help="run in a fresh sandbox")
    where.add_argument(
        "--live",
        action="store_true",
        help="run against the real fleet (docs/drills.md: opt-in, guarded; needs --config, "
        "--approve)",
    )
    d.add_argument("--report", type=Path, required=True, metavar="REPORT.json")
    d.add_argument(
        "--api", metavar="URL", help="--live: the running daemon (default: watcher.listen)"
    )
    d.add_argument(
        "--token-file", type=Path, metavar="PATH", help="--live: the API token, if reads need one"
    )
    d.add_argument("--approve", action="store_true", help="--live: yes, stop real servers")
    d.add_argument("--by", default="", metavar="NAME", help="--live: who approves (for the record)")
    d.add_argument("--topology", type=Path, metavar="FILE")
    d.add_argument("--state-dir", type=Path, metavar="DIR", help="default: a temporary dir")
    d.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="record the drill in this config's drill ledger (its watcher.state_dir)",
    )
    d.set_defaults(func=cmd_drill)


def _topology(path: Path | None) -> Topology | None:
    try:
        return load_topology(path) if path else default_topology()
    except ConfigError as err:
        _problems(str(path), err)
        return None


def _problems(what: str, err: ConfigError) -> None:
    print(f"{what}: {len(err.problems)} problem(s):", file=sys.stderr)
    for problem in err.problems:
        print(f"  - {problem}", file=sys.stderr)


def _run_until_signal(main: Awaitable[T]) -> T | None:
    """Run `main`; SIGINT/SIGTERM cancel it, so its cleanup runs. None when interrupted."""

    async def runner() -> T | None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None

    return asyncio.run(runner())


# --- drwatch sandbox --------------------------------------------------------------------------


def cmd_sandbox(args: argparse.Namespace) -> int:
    topo = _topology(args.topology)
    if topo is None:
        return EXIT_BAD_INPUT
    alertmanagers = _alertmanagers(args.alertmanager)
    if alertmanagers is None:
        return EXIT_BAD_INPUT
    if args.postgres and not _postgres_installed():
        return EXIT_FAILED
    logs.configure("auto", "info")
    try:
        options = Options(
            alertmanager_urls=alertmanagers,
            postgres=args.postgres,
            backups=not args.no_backups,
            watcher_key=args.watcher_key,
        )
        _run_until_signal(_serve(topo, args.state_dir, options))
    except (SandboxError, OSError, PgError) as err:
        print(f"the sandbox could not start: {err}", file=sys.stderr)
        return EXIT_FAILED
    print("sandbox stopped", file=sys.stderr)
    return EXIT_OK


def _postgres_installed() -> bool:
    """Real databases need the PostgreSQL 15 binaries; say so before anything starts."""
    if pg_bin_dir() is not None:
        return True
    print(
        f"PostgreSQL 15 is not installed (no {PG_BIN}/postgres): "
        "./dev system-deps installs it (Debian package postgresql)",
        file=sys.stderr,
    )
    return False


def _alertmanagers(urls: list[str]) -> tuple[str, ...] | None:
    """The --alertmanager URLs, checked as the daemon's config will check them (None: bad)."""
    try:
        AlertsConfig.model_validate({"alertmanager_urls": urls})
    except ValidationError as err:
        print(f"--alertmanager: {err.errors()[0]['msg']}", file=sys.stderr)
        return None
    return tuple(urls)


def _backup_lines(sb: Sandbox) -> str:
    key = sb.backups.key if sb.backups is not None else None
    if sb.backups is None or key is None:
        return ""
    return (
        f"  backups    : drwatch backups --api {sb.api_url}\n"
        f"  backup key : {key.private_file}  (yours; the watcher "
        f"{'has a copy' if sb.backups.watcher_key else 'has none'})\n"
        f"  off-site   : {sb.backups.offsite_moto.url}\n"
    )


async def _serve(topo: Topology, state_dir: Path, options: Options) -> None:
    sb = Sandbox(topo, state_dir, options)
    control.attach(sb)
    async with sb:
        answering = await _daemon_answers(sb, API_DEADLINE_S)
        print(
            f"drwatch sandbox is up ({len(sb.hosts)} instances)\n"
            f"  status/API : {sb.api_url}/api/v1/status\n"
            f"  status page: {sb.api_url}/\n"
            f"  control    : {sb.control_url}  (drwatch sandbox fault VERB TARGET)\n"
            f"  service    : {sb.service_url}\n"
            + "".join(
                f"  postgres   : {vol} on {addr}\n" for vol, addr in sb.databases.describe().items()
            )
            + _backup_lines(sb)
            + f"  state dir  : {sb.state_dir}  (config, logs)\n"
            + "".join(f"  alerts to  : {url}\n" for url in options.alertmanager_urls)
            + (
                ""
                if answering
                else f"  warning: drwatch is not answering yet; see {sb.watcher.log_path}\n"
            )
            + "Ctrl-C stops everything.",
            flush=True,
        )
        await asyncio.Event().wait()


async def _daemon_answers(sb: Sandbox, deadline_s: float) -> bool:
    """Wait until the daemon's API answers at all, so the printed address works."""
    api = DaemonApi(sb.api_url, sb.session())
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                if await api.healthy() is not None:
                    return True
                await asyncio.sleep(0.2)
    except TimeoutError:
        return False


# --- drwatch sandbox fault / heal ---------------------------------------------------------------


def _control_url(state_dir: Path) -> str | None:
    try:
        url = json.loads((state_dir / STATE_FILE).read_text())["control"]
    except (OSError, ValueError, KeyError):
        return None
    return url if isinstance(url, str) else None


def _send(args: argparse.Namespace, body: dict[str, Any]) -> int:
    url = _control_url(args.state_dir)
    if url is None:
        print(f"no running sandbox found in {args.state_dir}", file=sys.stderr)
        return EXIT_FAILED
    try:
        status, answer = asyncio.run(control.send(url, body))
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        print(f"the sandbox at {url} did not answer: {err}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(answer.get("done"))
    return EXIT_OK


def cmd_fault(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"do": args.verb, "target": args.target}
    for key in ("delay", "period", "percent", "rate"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    return _send(args, body)


def cmd_heal(args: argparse.Namespace) -> int:
    return _send(args, {"do": "heal", "target": args.target})


# --- drwatch drill ------------------------------------------------------------------------------


def _ledger_dir(config: Path | None) -> Path | None:
    """The drill ledger's directory: the config's watcher.state_dir (None: no config, or a
    config with problems, already reported)."""
    if config is None:
        return None
    try:
        return config_mod.load(config).watcher.state_dir
    except ConfigError as err:
        _problems(str(config), err)
        return None


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def cmd_drill(args: argparse.Namespace) -> int:
    if args.live:
        from drwatch.plan.cli import cmd_live_drill  # noqa: PLC0415 - only for live drills

        return cmd_live_drill(args)
    return _sandbox_drill(args)


def _drill_inputs(args: argparse.Namespace) -> tuple[Topology, Scenario, Path | None] | None:
    """The topology, the scenario and the ledger's directory; None (said why) when bad."""
    topo = _topology(args.topology)
    if topo is None:
        return None
    ledger_dir = _ledger_dir(args.config)
    if args.config is not None and ledger_dir is None:
        return None
    try:
        scenario = load_scenario(args.scenario, topo)
    except ConfigError as err:
        _problems(str(args.scenario), err)
        return None
    return topo, scenario, ledger_dir


def _sandbox_drill(args: argparse.Namespace) -> int:
    inputs = _drill_inputs(args)
    if inputs is None:
        return EXIT_BAD_INPUT
    topo, scenario, ledger_dir = inputs
    if scenario.postgres and not _postgres_installed():
        return EXIT_FAILED
    logs.configure("auto", "warning")
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="drwatch-drill-"))
    try:
        report = _run_until_signal(run_drill(scenario, topo, state_dir))
    except (SandboxError, OSError, PgError) as err:
        print(f"the sandbox could not start: {err} (logs in {state_dir})", file=sys.stderr)
        return EXIT_FAILED
    if report is None:
        print(f"drill interrupted; everything stopped (logs in {state_dir})", file=sys.stderr)
        return EXIT_FAILED
    write_report(report, args.report)
    print(summary(report))
    if ledger_dir is not None:
        rec = record_report(ledger_dir, report, "sandbox", by=_who())
        print(f"recorded in the drill ledger as {rec.id}")
    if report["passed"] and args.state_dir is None:
        shutil.rmtree(state_dir, ignore_errors=True)
    elif not report["passed"]:
        print(f"logs kept in {state_dir}", file=sys.stderr)
    return EXIT_OK if report["passed"] else EXIT_FAILED
