"""The agent's logging: structlog, JSON lines when not on a terminal.

The agent cannot import the daemon's `drwatch.logs` (it imports nothing from the
daemon side), so it carries this small twin. The agent never logs the secret, a
signature or parameter values; the redaction here is a second line of defence.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(r"(secret|token|password|signature|nonce)", re.I)
REDACTED = "[redacted]"


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: values under secret-looking keys never leave."""
    for key in list(event):
        if _SECRET_KEYS.search(key) and not key.endswith(("_file", "_path")):
            event[key] = REDACTED
    return event


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the agent process (`drwatch agent` calls this once)."""
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A lazy logger: it follows `configure` even when created at import time."""
    return structlog.get_logger(**context)
