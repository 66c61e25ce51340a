"""`drwatch plan` and `drwatch drills`.

drwatch plan --config PATH [--api URL] [--format markdown|html|pdf] [--output FILE] [--check]
drwatch drills --config PATH | --api URL [--json]
drwatch drills record REPORT.json --kind KIND --config PATH

Exit codes: 0 ok; 1 `--check` found unmet parts (or a PDF could not be made);
2 bad input (a config with problems, a missing file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drwatch.client import DEFAULT_API, ApiClient, ApiRequestError, read_token
from drwatch.commands import load_or_report
from drwatch.config import Config
from drwatch.errors import ConfigError, DrwatchError
from drwatch.ledger import FILENAME, KINDS, DrillLedger, DrillRecord, record_report
from drwatch.plan import render
from drwatch.plan.build import Drills, Live, build_plan, dur, when
from drwatch.plan.document import Plan

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PDF_DEADLINE_S = 120.0
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="render the disaster-recovery plan (Markdown, HTML or PDF); --check gates on it",
        description=(
            "Generate the DR plan from the config and, with --api, the running daemon's "
            "state. --check exits 1 when a part is not met (no drill within the interval, "
            "a readiness finding, a missing contact)."
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="PATH")
    p.add_argument("--api", metavar="URL", help=f"the running daemon (e.g. {DEFAULT_API})")
    p.add_argument("--token-file", type=Path, metavar="PATH", help="API token, if reads need one")
    p.add_argument("--format", choices=("markdown", "html", "pdf"), default="markdown")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: standard output")
    p.add_argument("--check", action="store_true", help="exit 1 when any part is not met")
    p.set_defaults(func=cmd_plan)

    d = sub.add_parser("drills", help="the drill ledger: every drill with its result")
    d.add_argument("--config", type=Path, metavar="PATH", help="read the ledger in its state_dir")
    d.add_argument("--api", metavar="URL", help="or ask the running daemon")
    d.add_argument("--token-file", type=Path, metavar="PATH")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_drills)
    actions = d.add_subparsers(dest="drills_command", metavar="ACTION")
    r = actions.add_parser("record", help="record a drill report (e.g. a restore test) by hand")
    r.add_argument("report", type=Path, metavar="REPORT.json")
    r.add_argument("--kind", choices=KINDS, required=True)
    r.add_argument("--config", type=Path, required=True, metavar="PATH")
    r.add_argument("--by", default="", help="who ran it (for the record)")
    r.set_defaults(func=cmd_record)


# -- gathering -----------------------------------------------------------------------------


def local_drills(cfg: Config) -> Drills:
    """The ledger in the config's state dir; an absent ledger is an empty one."""
    path = cfg.watcher.state_dir / FILENAME
    if not path.exists():
        return Drills(source=str(path))
    try:
        with DrillLedger(cfg.watcher.state_dir) as ledger:
            return Drills(ledger.recent(1000), str(path), latest=ledger.latest())
    except (OSError, ValueError) as err:
        return Drills(source=str(path), error=f"{path}: {err}")
    except Exception as err:  # sqlite3.Error and kin: the plan says so, it does not fail
        return Drills(source=str(path), error=f"{path}: {type(err).__name__}: {err}")


def _latest(records: list[DrillRecord]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for r in records:
        key = (r.kind, r.result)
        out[key] = max(out.get(key, 0.0), r.started_at)
    return out


async def _fetch_live(api: str, token: str | None) -> tuple[Live, Drills | None]:
    client = ApiClient(api, token)
    try:
        status = await client.status()
    except DrwatchError as err:
        return Live(api=api, error=f"the daemon at {api} did not answer ({err})"), None
    try:
        body = await client.drills()
        records = [DrillRecord.from_dict(d) for d in body.get("drills") or []]
        drills = Drills(records, api, latest=_latest(records))
    except (DrwatchError, KeyError, TypeError, ValueError, AttributeError) as err:
        drills = Drills(source=api, error=f"the daemon's drill ledger did not answer ({err})")
    backups, backups_error = await _fetch_backups(client, api)
    return Live(status=status, api=api, backups=backups, backups_error=backups_error), drills


async def _fetch_backups(client: ApiClient, api: str) -> tuple[Any, str]:
    """GET /api/v1/backups, or why not (a daemon without [backup] answers 404)."""
    try:
        body = await client.backups()
    except ApiRequestError as err:
        if err.status == 404:
            return None, f"the daemon at {api} takes no backups ([backup] is not configured there)"
        return None, f"the daemon's backups did not answer ({err})"
    except DrwatchError as err:
        return None, f"the daemon's backups did not answer ({err})"
    return (
        (body, "")
        if isinstance(body, dict)
        else (None, "the daemon's backups answer is not an object")
    )


def gather(cfg: Config, api: str | None, token: str | None) -> tuple[Live, Drills]:
    if not api:
        return Live(), local_drills(cfg)
    live, drills = asyncio.run(_fetch_live(api, token))
    return live, drills if drills is not None else local_drills(cfg)


# -- drwatch plan --------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    if args.format == "pdf" and args.output is None:
        print("drwatch plan: --format pdf needs --output FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        token = read_token(args.token_file)
    except ConfigError as err:
        print(f"drwatch plan: {'; '.join(err.problems)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    live, drills = gather(cfg, args.api, token)
    plan = build_plan(cfg, live, drills, time.time())
    written = _write(plan, args)
    if written != EXIT_OK or not args.check:
        return written
    return _verdict(plan)


def _verdict(plan: Plan) -> int:
    for section, text in plan.unmet:
        print(f"not met: {section}: {text}", file=sys.stderr)
    if plan.unmet:
        print(f"drwatch plan: {len(plan.unmet)} part(s) not met", file=sys.stderr)
        return EXIT_FAILED
    print("drwatch plan: every part is met", file=sys.stderr)
    return EXIT_OK


def _write(plan: Plan, args: argparse.Namespace) -> int:
    if args.check and args.output is None and args.format == "markdown":
        return EXIT_OK  # --check alone: only the verdict
    if args.format == "pdf":
        return print_pdf(render.page(plan), args.output)
    text = render.markdown(plan) if args.format == "markdown" else render.page(plan)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return EXIT_OK


def chromium_binary() -> str | None:
    return next((found for name in CHROMIUMS if (found := shutil.which(name))), None)


def print_pdf(page: str, output: Path) -> int:
    """The HTML page printed to PDF by headless Chromium (the page has no external parts)."""
    binary = chromium_binary()
    if binary is None:
        print(
            "drwatch plan: a PDF needs Chromium (apt install chromium); "
            "--format html gives the same page to print from any browser",
            file=sys.stderr,
        )
        return EXIT_FAILED
    with tempfile.TemporaryDirectory(prefix="drwatch-plan-") as tmp:
        src = Path(tmp) / "plan.html"
        src.write_text(page, encoding="utf-8")
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={output.resolve()}",
            src.as_uri(),
        ]
        try:
            proc = subprocess.run(  # noqa: S603 - our own argv, no shell
                argv, capture_output=True, text=True, timeout=PDF_DEADLINE_S, check=False
            )
        except subprocess.TimeoutExpired:
            print(
                f"drwatch plan: Chromium did not finish within {PDF_DEADLINE_S:g}s", file=sys.stderr
            )
            return EXIT_FAILED
    if proc.returncode != 0 or not output.exists() or output.stat().st_size == 0:
        print(f"drwatch plan: Chromium failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- drwatch drills ------------------------------------------------------------------------


def render_drills(records: list[DrillRecord]) -> str:
    if not records:
        return "no drills recorded"
    lines = []
    for r in records:
        lines.append(
            f"{when(r.started_at)}  {r.kind:<12} {r.result:<6}  {r.scenario}  "
            f"detection {dur(r.detection_s)}, recovery {dur(r.recovery_s)} (RTO {dur(r.rto_s)}), "
            f"data loss {dur(r.data_loss_s)} (RPO {dur(r.rpo_s)})  {r.id}"
        )
    return "\n".join(lines)


def cmd_drills(args: argparse.Namespace) -> int:
    if bool(args.config) == bool(args.api):
        print("drwatch drills: give --config PATH or --api URL", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.api:
        live, drills = asyncio.run(_fetch_live(args.api, read_token(args.token_file)))
        if live.error or drills is None:
            print(f"drwatch drills: {live.error}", file=sys.stderr)
            return EXIT_FAILED
    else:
        cfg = load_or_report(args.config)
        if cfg is None:
            return EXIT_BAD_INPUT
        drills = local_drills(cfg)
    if drills.error:
        print(f"drwatch drills: {drills.error}", file=sys.stderr)
        return EXIT_FAILED
    records = list(drills.records)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
    else:
        print(render_drills(records))
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        print(f"drwatch drills record: {args.report}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not isinstance(report, dict) or "passed" not in report:
        print(
            f"drwatch drills record: {args.report} is not a drill report (no 'passed')",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    rec = record_report(cfg.watcher.state_dir, report, args.kind, args.by)
    print(f"recorded {rec.id}: {rec.kind} {rec.scenario} {rec.result}")
    return EXIT_OK


# -- drwatch drill --live ------------------------------------------------------------------


def cmd_live_drill(args: argparse.Namespace) -> int:
    """Validate, ask the daemon, refuse with every reason or run; record in the ledger."""
    from drwatch.plan import live  # noqa: PLC0415
    from drwatch.sandbox.verdict import summary  # noqa: PLC0415
    from drwatch.tomlconfig import read_toml  # noqa: PLC0415

    if args.config is None:
        print("drwatch drill --live: --config PATH is required", file=sys.stderr)
        return EXIT_BAD_INPUT
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    try:
        scenario = live.parse_live(read_toml(args.scenario))
        token = read_token(args.token_file)
    except ConfigError as err:
        print(f"{args.scenario}: {len(err.problems)} problem(s):", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    api = args.api or f"http://{cfg.watcher.listen}"
    by = args.by or _user() if args.approve else ""
    report = asyncio.run(_live(cfg, scenario, api, token, by))
    if report is None:
        return EXIT_FAILED
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(summary(report))
    rec = record_report(cfg.watcher.state_dir, report, "live", by=by)
    print(f"recorded in the drill ledger as {rec.id}")
    return EXIT_OK if report["passed"] else EXIT_FAILED


def _user() -> str:
    import getpass  # noqa: PLC0415

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


async def _live(cfg: Config, scenario: Any, api: str, token: str | None, by: str) -> Any:
    import aiohttp  # noqa: PLC0415

    from drwatch.plan import live  # noqa: PLC0415
    from drwatch.providers.aws import AwsProvider  # noqa: PLC0415

    try:
        status = await ApiClient(api, token).status()
    except DrwatchError as err:
        print(f"drwatch drill --live: refused: the daemon did not answer ({err})", file=sys.stderr)
        return None
    reasons = live.refusals(cfg, scenario, status, by)
    if reasons:
        print("drwatch drill --live: refused, nothing was touched:", file=sys.stderr)
        for reason in reasons:
            print(f"  - {reason}", file=sys.stderr)
        return None
    print(f"live drill {scenario.name!r} approved by {by}: starting", file=sys.stderr)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with AwsProvider(cfg.provider) as provider, aiohttp.ClientSession(headers=headers) as s:
        return await live.run_live(
            cfg, scenario, api_url=api, provider=provider, session=s, status=status
        )
