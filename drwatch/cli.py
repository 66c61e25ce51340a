"""The `drwatch` command: a thin dispatcher. Each command lives beside what it drives.

A command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the handler. Exit codes: 0 ok, 1 a check failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from drwatch import __version__

# Explicit registry: one line per command module.
COMMAND_MODULES: tuple[str, ...] = (
    "drwatch.commands",
    "drwatch.agent.cli",
    "drwatch.client_cli",
    "drwatch.sandbox.cli",
    "drwatch.backup.commands",
    "drwatch.plan.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drwatch",
        description=(
            "A disaster-recovery watcher: polls the cloud API, an agent on every server and "
            "the applications, classifies outages by scope, and runs recovery playbooks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"drwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
