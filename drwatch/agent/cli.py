"""`drwatch agent --config PATH`: run the on-host agent until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from drwatch.agent import config as agent_config
from drwatch.agent.server import run_agent
from drwatch.errors import ConfigError
from drwatch.logs import configure

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
