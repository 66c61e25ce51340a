"""`drwatch agent --config PATH`: run the on-host agent until SIGTERM/SIGINT.

`drwatch agent-secret --master-file PATH --instance-id ID`: print one host's secret,
derived from the watcher's master secret (for `agent.per_host_secrets = true`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from drwatch.agent import config as agent_config
from drwatch.agent.server import run_agent
from drwatch.agent.wire import derive_host_secret, valid_target
from drwatch.errors import ConfigError
from drwatch.logs import configure
from drwatch.secretfile import read_secret

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run the on-host agent (facts, local checks, allow-listed actions)",
        description=(
            "Serve signed requests from the watcher: GET /v1/facts and "
            "POST /v1/actions/NAME. Listens on 127.0.0.1:9180 unless the config says otherwise."
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="PATH")
    p.set_defaults(func=main)
    d = sub.add_parser(
        "agent-secret",
        help="print one agent's secret, derived from the master secret and its instance id",
        description=(
            "For agent.per_host_secrets = true: the watcher keeps the master secret; each "
            "host's agent gets only its own, printed here (put it in that host's secret_file, "
            "mode 600)."
        ),
    )
    d.add_argument("--master-file", type=Path, required=True, metavar="PATH")
    d.add_argument("--instance-id", required=True, metavar="ID")
    d.set_defaults(func=derive_main)


def derive_main(args: argparse.Namespace) -> int:
    if not valid_target(args.instance_id):
        print(f"{args.instance_id[:64]!r} is not an instance id", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        master = read_secret(args.master_file)
    except ConfigError as err:
        _report(args.master_file, err)
        return EXIT_BAD_INPUT
    print(derive_host_secret(master, args.instance_id).decode("ascii"))
    return EXIT_OK


def _report(path: Path, err: ConfigError) -> None:
    print(f"{path}: {len(err.problems)} problem(s):", file=sys.stderr)
    for problem in err.problems:
        print(f"  - {problem}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = agent_config.load(args.config)
    except ConfigError as err:
        _report(args.config, err)
        return EXIT_BAD_INPUT
    configure(cfg.log_format, cfg.log_level)
    try:
        asyncio.run(_serve(cfg))
    except ConfigError as err:  # the secret file: missing, too open, too short
        _report(args.config, err)
        return EXIT_BAD_INPUT
    return EXIT_OK


async def _serve(cfg: agent_config.AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_agent(cfg, stop)
