"""The HTTP probe's pure judgement: conditions -> a short reason, or none."""

from __future__ import annotations

import errno
import socket

import pytest

from drwatch.model.observation import Health, Layer
from drwatch.probes.http import HttpConditions, dig, judge, same_json_value
from drwatch.probes.result import ProbeResult
from drwatch.probes.tcp import connect_failure

CAP = 1024
JSON_OK = b'{"status": "ok", "checks": {"db": {"status": "ok", "lag": 0}}, "items": [{"up": true}]}'

CASES = [
    ("all good", HttpConditions(), 200, b"", 0.1, ""),
    ("wrong status", HttpConditions(), 500, b"", 0.1, "status 500, want 200"),
    ("status in list", HttpConditions(expect_status=(200, 204)), 204, b"", 0.1, ""),
    ("any status", HttpConditions(expect_status=()), 503, b"", 0.1, ""),
    ("body lacks", HttpConditions(body_contains="ok"), 200, b"bad", 0.1, "body lacks 'ok'"),
    ("body has", HttpConditions(body_contains="ok"), 200, b"all ok", 0.1, ""),
    (
        "json field differs",
        HttpConditions(json_path="status", json_equals="ok"),
        200,
        b'{"status": "bad"}',
        0.1,
        "json status='bad', want 'ok'",
    ),
    (
        "json nested",
        HttpConditions(json_path="checks.db.status", json_equals="ok"),
        200,
        JSON_OK,
        0.1,
        "",
    ),
    (
        "json list index",
        HttpConditions(json_path="items.0.up", json_equals=True),
        200,
        JSON_OK,
        0.1,
        "",
    ),
    (
        "json missing",
        HttpConditions(json_path="checks.cache", json_equals="ok"),
        200,
        JSON_OK,
        0.1,
        "json checks.cache missing, want 'ok'",
    ),
    (
        "not json",
        HttpConditions(json_path="a", json_equals=1),
        200,
        b"<html>",
        0.1,
        "body is not json",
    ),
    ("too slow", HttpConditions(max_latency=0.5), 200, b"", 0.8, "latency 0.8s > 0.5s"),
    (
        "status wins over latency",
        HttpConditions(max_latency=0.5),
        500,
        b"",
        0.8,
        "status 500, want 200",
    ),
    (
        "truncated body",
        HttpConditions(body_contains="x"),
        200,
        b"x" * (CAP + 1),
        0.1,
        "body over 1024 bytes",
    ),
]


@pytest.mark.parametrize(
    ("cond", "status", "body", "latency", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_judge(cond: HttpConditions, status: int, body: bytes, latency: float, want: str) -> None:
    """The first failed condition names itself in a short reason; none failed gives ""."""
    assert judge(cond, status, body, latency, CAP) == want


@pytest.mark.parametrize(
    ("got", "want", "same"),
    [
        (True, True, True),
        (1, True, False),
        (True, 1, False),
        ("1", 1, False),
        (1, 1.0, True),
        ("ok", "ok", True),
        (None, "ok", False),
    ],
)
def test_json_equality_keeps_types_apart(
    got: object, want: str | int | float | bool, same: bool
) -> None:
    """JSON true is not 1 and "1" is not 1; 1 and 1.0 are the same number."""
    assert same_json_value(got, want) is same


def test_dig_missing_paths() -> None:
    """Paths through a scalar, past a list's end or to an absent key find nothing."""
    doc = {"a": [1, {"b": 2}]}
    assert dig(doc, "a.1.b") == 2
    assert dig(doc, "a.2") is not dig(doc, "a.1.b")
    assert dig(doc, "a.0.b") is dig(doc, "x")


@pytest.mark.parametrize(
    ("err", "health", "reason"),
    [
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            Health.DOWN,
            "connection refused",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            Health.UNKNOWN,
            "dns: name or service not known",
        ),
        (
            OSError(errno.EHOSTUNREACH, "No route to host"),
            Health.UNKNOWN,
            "connect: no route to host",
        ),
    ],
)
def test_connect_failures(err: OSError, health: Health, reason: str) -> None:
    """Refused means the host said no (DOWN); network trouble means we could not see (UNKNOWN)."""
    got = connect_failure(err)
    assert (got.health, got.reason.lower()) == (health, reason)


def test_result_becomes_observation() -> None:
    """ok_at is the attempt time only when the probe passed."""
    up = ProbeResult(Health.UP, latency_s=0.01).observation("i-1", Layer.APP, 100.0)
    down = ProbeResult(Health.DOWN, "status 500, want 200").observation("i-1", Layer.APP, 100.0)
    assert (up.ok_at, up.latency_s, up.layer) == (100.0, 0.01, Layer.APP)
    assert (down.ok_at, down.reason) == (None, "status 500, want 200")
