"""The daemon's own commands: `check-config` and `run`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from drwatch import config as config_mod
from drwatch.errors import ConfigError
from drwatch.units import format_duration

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a configuration file and summarise what it would watch",
        description=(
            "Validate PATH whole. Exit 0 with a summary when it is valid; exit 2 and list "
            "every problem with its dotted path when it is not."
        ),
    )
    p.add_argument("path", type=Path, metavar="PATH")
    p.set_defaults(func=check_config)

    p = sub.add_parser(
        "run",
        help="run the watcher daemon until SIGTERM/SIGINT",
        description="Run discovery, the three observers and the decision loop until stopped.",
    )
    p.add_argument("--config", type=Path, required=True, metavar="PATH")
    p.set_defaults(func=run)


def load_or_report(path: Path) -> config_mod.Config | None:
    """The config, or None after printing every problem to stderr."""
    try:
        return config_mod.load(path)
    except ConfigError as err:
        print(f"{path}: {len(err.problems)} problem(s):", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def summarise(cfg: config_mod.Config) -> str:
    roles = Counter(g.role.value for g in cfg.groups)
    checks = sum(len(g.checks) for g in cfg.groups)
    lines = [
        f"watcher {cfg.watcher.name} on {cfg.watcher.listen}, state in {cfg.watcher.state_dir}",
        f"provider {cfg.provider.kind}: regions {', '.join(cfg.provider.regions)}",
        f"groups: {len(cfg.groups)} ("
        + ", ".join(f"{n} {r}" for r, n in sorted(roles.items()))
        + f"), {checks} app check(s)",
        f"canaries: {len(cfg.canaries)}",
        f"objectives: rpo {format_duration(cfg.objectives.rpo)}, "
        f"rto {format_duration(cfg.objectives.rto)}, "
        f"{len(cfg.objectives.data_classes)} data class(es)",
    ]
    return "\n".join(lines)


def warnings(cfg: config_mod.Config) -> list[str]:
    """Valid, but probably not what the operator wants: said, never refused."""
    return [
        f"groups[{n}] ({g.name}): database roles come from neither a postgres check nor "
        'role tags (set roles_from = "postgres_check" or "tags"); a database whose '
        "role is unknown is recovered as the primary only with approval"
        for n, g in enumerate(cfg.groups)
        if g.role.value == "database" and g.roles_from is None
    ]


def check_config(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.path)
    if cfg is None:
        return EXIT_BAD_INPUT
    print(f"{args.path}: ok")
    print(summarise(cfg))
    for warning in warnings(cfg):
        print(f"warning: {warning}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    # The composition root (and its adapters) load only when the daemon runs.
    from drwatch.daemon import run_daemon  # noqa: PLC0415

    return asyncio.run(run_daemon(cfg))
