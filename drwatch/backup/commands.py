"""`drwatch backup ...`: operator commands that need the private key (restore-test).

Registered by drwatch.cli; the work (and botocore) loads only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
LOCATIONS = ("primary", "standby_region", "offsite")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="backup operations run by an operator (restore-test)",
        description="Backup operations that need the private key, run off the watcher.",
    )
    ops = p.add_subparsers(dest="backup_command", metavar="OPERATION")
    r = ops.add_parser(
        "restore-test",
        help="restore the newest dump of a class into a scratch PostgreSQL and report",
    )
    r.add_argument("--config", type=Path, required=True, metavar="PATH")
    r.add_argument("--data-class", required=True, metavar="CLASS")
    r.add_argument("--key", type=Path, required=True, metavar="PRIVATE_KEY_FILE")
    r.add_argument("--location", default="primary", choices=LOCATIONS)
    r.add_argument("--pg-bin", type=Path, default=PG_BIN, metavar="DIR")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=_restore_test)


def _restore_test(args: argparse.Namespace) -> int:
    from drwatch.backup.restore_test import restore_test_command  # noqa: PLC0415

    return restore_test_command(args)
