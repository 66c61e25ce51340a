"""Property: whatever an agent answers, the daemon's decoders give a value or a WireError.

Absurd numbers (thousands of digits, out of range), deep nesting, too many keys and wrong
types anywhere in the document: never an exception other than WireError, never a hang.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drwatch.agent.wire import (
    MAX_DEPTH,
    SCHEMA,
    decode_action_request,
    decode_action_result,
    decode_facts,
    facts_to_dict,
)
from drwatch.errors import WireError
from tests.unit.test_agent_wire import sample_facts

# Numbers an attacker or a broken agent might send: huge, negative, fractional, boundary.
NUMBERS = (
    st.integers()
    | st.integers(min_value=10**300, max_value=10**4000)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -1, 0, 100, 101])
    | st.floats()
)
LEAVES = st.none() | st.booleans() | NUMBERS | st.text(max_size=12)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)

# Every place in the facts document a value can sit, by path.
PATHS = [
    ["collected_at"],
    ["status"],
    ["uptime_s"],
    ["cpu_percent"],
    ["load", "1m"],
    ["memory", "total_bytes"],
    ["memory", "available_bytes"],
    ["memory", "used_percent"],
    ["disks", "/", "total_bytes"],
    ["disks", "/", "used_percent"],
    ["checks", "database", "status"],
    ["checks", "database", "data", "lag_s"],
    ["checks", "database", "data"],
    ["checks"],
    ["hostname"],
]


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def decode_or_refuse(raw: bytes) -> None:
    """The invariant: facts that are plausible, or WireError. Nothing else escapes."""
    try:
        facts = decode_facts(raw)
    except WireError:
        return
    assert 0 <= facts.cpu_percent <= 100
    assert 0 <= facts.memory.total_bytes < 2**63
    assert all(0 <= d.used_percent <= 100 for d in facts.disks.values())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), JSON)
def test_any_value_anywhere_in_the_facts_decodes_or_is_refused(path: list[str], value: Any) -> None:
    """A valid answer with one field replaced by arbitrary JSON (huge numbers included)."""
    data = facts_to_dict(sample_facts())
    data["disks"]["/"] = data["disks"].get("/") or next(iter(data["disks"].values()))
    target = data
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    decode_or_refuse(dumps(data))


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=MAX_DEPTH, max_value=5000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_refused_at_any_depth(depth: int, opener: str) -> None:
    """Nesting past the limit, up to thousands of levels, is a WireError."""
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "1" + closer * depth
    data = facts_to_dict(sample_facts())
    raw = dumps(data)[:-1] + f',"extra":{inner}}}'.encode()
    with pytest.raises(WireError, match="nested"):
        decode_facts(raw)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_action_answers_decode_or_are_refused(value: Any) -> None:
    """An action's answer with an arbitrary result: a dict back, or WireError."""
    try:
        result = decode_action_result(dumps({"schema": SCHEMA, "result": value}))
    except WireError:
        return
    assert isinstance(result, dict)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_action_requests_decode_or_are_refused(value: Any) -> None:
    """The agent's side of an action: flat string params, or WireError."""
    try:
        params = decode_action_request(dumps({"params": value}))
    except WireError:
        return
    assert all(isinstance(v, str) for v in params.values())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"schema": "' + SCHEMA.encode() + b'", "result": {"n": ' + b"9" * 4000 + b"}}",
            "result.n: number out of range",
        ),
        (
            b'{"schema": "' + SCHEMA.encode() + b'", "result": ' + b"[" * 40 + b"]" * 40 + b"}",
            "nested deeper",
        ),
        (
            b'{"schema": "' + SCHEMA.encode() + b'", "result": {"n": ' + b"9" * 5000 + b"}}",
            "not JSON",
        ),
    ],
)
def test_absurd_action_answers_are_refused_with_the_reason(raw: bytes, reason: str) -> None:
    """A 4,000-digit integer, deep nesting or a number past the parser's limit: WireError."""
    with pytest.raises(WireError, match=reason):
        decode_action_result(raw)
