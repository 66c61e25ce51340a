"""Logs: JSON lines off a terminal, and no secret ever reaches a line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from drwatch import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """These tests configure structlog globally; put the previous setup back afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_json_lines_when_not_a_terminal() -> None:
    """Off a terminal, each event is one JSON object with the event name and fields."""
    out = io.StringIO()
    logs.configure("auto", "info", stream=out)
    logs.get_logger(component="t").info("target.down", target="app-3", layer="agent")
    record = json.loads(out.getvalue().strip())
    assert record["event"] == "target.down"
    assert record["target"] == "app-3"
    assert record["component"] == "t"
    assert record["level"] == "info"


def test_secrets_are_redacted() -> None:
    """Values under secret-like keys and bearer tokens inside text never reach the log."""
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get_logger().info(
        "api.request",
        token="s3cr3t-token-value",
        agent_secret=b"hunter2hunter2hunter2",
        header="Authorization: Bearer abcdef123456",
        secret_file="/etc/drwatch/agent-secret",
    )
    text = out.getvalue()
    assert "s3cr3t-token-value" not in text
    assert "hunter2" not in text
    assert "abcdef123456" not in text
    # A path to a secret is not a secret and stays readable.
    assert "/etc/drwatch/agent-secret" in text


def test_level_filters() -> None:
    """Below the configured level, nothing is written."""
    out = io.StringIO()
    logs.configure("json", "warning", stream=out)
    logs.get_logger().info("tick.summary")
    assert out.getvalue() == ""
