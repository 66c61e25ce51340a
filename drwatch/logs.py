"""Logging with structlog: JSON lines when not on a terminal, readable console otherwise.

Neutral ground: the daemon and the agent both configure logging through this module.

Secrets never reach a log line: values under secret-looking keys are replaced, and
bearer tokens or HMAC signatures inside strings are masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(
    r"(secret|token|password|passwd|authorization|signature|nonce|credential)", re.I
)
_SECRET_IN_TEXT = re.compile(r"(?i)(bearer\s+|x-drwatch-signature[=:]\s*)[^\s,;\"']+")
REDACTED = "[redacted]"


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: no secret leaves through a log line."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and not key.endswith(("_file", "_path")):
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = _SECRET_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, value)
    return event


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once, at the composition root. `fmt` is auto | json | console."""
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
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A lazy logger: it resolves the configuration at each call, so a module-level logger
    follows `configure()` made later (at the composition root, or by a test)."""
    return structlog.get_logger(**context)
