"""The agent wire: the canonical signing string, and the strict facts decoder."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drwatch.agent import wire
from drwatch.agent.wire import (
    CheckResult,
    DiskUsage,
    Facts,
    Load,
    Memory,
    Status,
    decode_action_request,
    decode_action_result,
    decode_facts,
    encode_facts,
    facts_to_dict,
)
from drwatch.errors import WireError

SECRET = b"0123456789abcdef0123456789abcdef"


def sample_facts() -> Facts:
    db = CheckResult(
        "database", "database", Status.OK, "replica", {"role": "replica", "lag_s": 0.5}
    )
    return Facts(
        hostname="db-2",
        collected_at=1764130000.25,
        status=Status.OK,
        uptime_s=3600.0,
        cpu_percent=12.5,
        load=Load(0.5, 0.25, 0.125),
        memory=Memory(total_bytes=8 << 30, available_bytes=4 << 30, used_percent=50.0),
        disks={"/": DiskUsage("/", 100 << 30, 60 << 30, 40.0)},
        checks={"database": db},
    )


def test_signature_is_hmac_over_the_documented_canonical_string() -> None:
    """The v2 signature is HMAC-SHA256 over seven newline-joined lines, the target's
    instance id second, as docs/agent.md says."""
    body = b'{"params":{}}'
    canonical = "\n".join(
        [
            "drwatch-agent-v2",
            "i-0abc123",
            "POST",
            "/v1/actions/promote",
            "1764130000.000000",
            "00ff" * 8,
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()
    expected = hmac.new(SECRET, canonical, hashlib.sha256).hexdigest()
    got = wire.sign(
        SECRET,
        method="post",
        path="/v1/actions/promote",
        timestamp="1764130000.000000",
        nonce="00ff" * 8,
        body=body,
        target="i-0abc123",
    )
    assert got == expected


def test_v1_signature_is_the_old_six_lines() -> None:
    """Protocol v1 (accepted only behind accept_v1) keeps its canonical string."""
    canonical = "\n".join(
        [
            "drwatch-agent-v1",
            "GET",
            "/v1/facts",
            "1.000000",
            "00ff" * 8,
            hashlib.sha256().hexdigest(),
        ]
    ).encode()
    got = wire.sign(
        SECRET, method="GET", path="/v1/facts", timestamp="1.000000", nonce="00ff" * 8,
        body=b"", target=None,
    )  # fmt: skip
    assert got == hmac.new(SECRET, canonical, hashlib.sha256).hexdigest()


def test_signature_names_the_target() -> None:
    """The same request signed for two agents gives two signatures: neither opens the other."""
    common = {"method": "GET", "path": "/v1/facts", "timestamp": "1.0", "nonce": "00" * 8}
    for_a = wire.sign(SECRET, body=b"", target="i-a", **common)
    for_b = wire.sign(SECRET, body=b"", target="i-b", **common)
    assert for_a != for_b


def test_signed_headers_use_a_fresh_nonce_per_request() -> None:
    """Two requests signed in the same instant still differ, so neither looks like a replay."""
    first = wire.signed_headers(SECRET, "GET", "/v1/facts", b"", now=1.0, target="i-1")
    second = wire.signed_headers(SECRET, "GET", "/v1/facts", b"", now=1.0, target="i-1")
    assert first[wire.TIMESTAMP_HEADER] == second[wire.TIMESTAMP_HEADER] == "1.000000"
    assert first[wire.SIGNATURE_HEADER] != second[wire.SIGNATURE_HEADER]
    assert (first[wire.VERSION_HEADER], first[wire.TARGET_HEADER]) == ("2", "i-1")


@pytest.mark.parametrize("target", ["", "i-1\nGET", "i 1", "-i", "x" * 129])
def test_a_target_that_could_break_the_canonical_lines_is_refused(target: str) -> None:
    """No newline, space or empty target can be signed for."""
    with pytest.raises(WireError, match="not an instance id"):
        wire.signed_headers(SECRET, "GET", "/v1/facts", b"", now=1.0, target=target)


def test_answer_signature_is_hmac_over_the_documented_lines() -> None:
    """The answer's signature binds the target, the request's nonce, the status and body."""
    body = b'{"schema":"drwatch.agent/v1"}'
    lines = ["drwatch-agent-v2-answer", "i-1", "ab" * 16, "200", hashlib.sha256(body).hexdigest()]
    expected = hmac.new(SECRET, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    assert wire.sign_answer(SECRET, target="i-1", nonce="ab" * 16, status=200, body=body) == (
        expected
    )


def test_answer_refusal_says_why() -> None:
    """Unsigned, malformed, or signed for another nonce, status or body: each is named."""
    good = wire.sign_answer(SECRET, target="i-1", nonce="ab" * 16, status=200, body=b"{}")
    args: dict[str, Any] = {"target": "i-1", "nonce": "ab" * 16, "status": 200, "body": b"{}"}
    assert wire.answer_refusal(SECRET, given=good, **args) == ""
    assert "not signed" in wire.answer_refusal(SECRET, given=None, **args)
    assert "malformed" in wire.answer_refusal(SECRET, given="zz", **args)
    for change in ({"nonce": "cd" * 16}, {"status": 500}, {"body": b"[]"}, {"target": "i-2"}):
        assert "does not match" in wire.answer_refusal(SECRET, given=good, **{**args, **change})
    assert "does not match" in wire.answer_refusal(b"another-key-0123456789", given=good, **args)


def test_host_secrets_are_derived_per_instance() -> None:
    """HMAC-SHA256(master, label + instance id) as hex: stable, and different per host."""
    label = b"drwatch-agent-host-secret-v2\n"
    expected = hmac.new(SECRET, label + b"i-1", hashlib.sha256).hexdigest().encode()
    assert wire.derive_host_secret(SECRET, "i-1") == expected
    assert wire.derive_host_secret(SECRET, "i-2") != expected
    assert wire.derive_host_secret(b"another-master-0123456789", "i-1") != expected


def test_facts_round_trip_through_bytes() -> None:
    """Encoding then decoding gives back the same facts."""
    facts = sample_facts()
    assert decode_facts(encode_facts(facts)) == facts


def test_plain_dict_uses_the_documented_keys() -> None:
    """The dict the daemon stores as observation detail keeps its documented keys."""
    data = facts_to_dict(sample_facts())
    assert data["schema"] == "drwatch.agent/v1"
    assert data["load"] == {"1m": 0.5, "5m": 0.25, "15m": 0.125}
    assert data["disks"]["/"]["used_percent"] == 40.0
    assert data["checks"]["database"]["data"]["role"] == "replica"
    assert data["checks"]["database"]["status"] == "ok"


def mutated(path: list[str], value: Any) -> bytes:
    data = facts_to_dict(sample_facts())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["schema"], "drwatch.agent/v2", "unknown schema version"),
        (["schema"], KeyError, "facts.schema: missing"),
        (["hostname"], 7, "facts.hostname: expected a string"),
        (["uptime_s"], True, "facts.uptime_s: expected a number"),
        (["status"], "fine", "facts.status: 'fine' is not one of"),
        (["load", "5m"], "high", "facts.load.5m: expected a number"),
        (["memory", "total_bytes"], 1.5, "facts.memory.total_bytes: expected an integer"),
        (["disks"], [], "facts.disks: expected an object"),
        (["checks", "database", "data"], {"x": [1]}, "facts.checks.database.data.x"),
        (["checks", "database", "kind"], KeyError, "facts.checks.database.kind: missing"),
    ],
)
def test_malformed_facts_name_what_is_wrong(path: list[str], value: Any, reason: str) -> None:
    """Each malformed, missing or wrong-typed field is a WireError naming that field."""
    with pytest.raises(WireError, match=reason.replace(".", r"\.")):
        decode_facts(mutated(path, value))


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe\x00", b"[1, 2]", b'{"schema": NaN}', b"[" * 100_000, b"1" * 5000],
)
def test_non_json_and_non_objects_are_wire_errors(raw: bytes) -> None:
    """Garbage, deep nesting, NaN and giant numbers are all WireError, never anything else."""
    with pytest.raises(WireError):
        decode_facts(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_wire_error(raw: bytes) -> None:
    """Whatever bytes arrive, the decoder answers with facts or a WireError."""
    with contextlib.suppress(WireError):
        decode_facts(raw)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_only_ever_raises_wire_error(value: object) -> None:
    """Whatever JSON arrives (NaN and infinities included), the decoder raises only WireError."""
    with contextlib.suppress(WireError):
        decode_facts(json.dumps(value).encode())


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_arbitrary_json_inside_a_valid_envelope_only_raises_wire_error(value: object) -> None:
    """A valid schema with arbitrary values in every field still raises only WireError."""
    data = facts_to_dict(sample_facts())
    for key in ("status", "load", "memory", "disks", "checks", "uptime_s"):
        broken = dict(data)
        broken[key] = value
        with contextlib.suppress(WireError):
            decode_facts(json.dumps(broken).encode())


FINITE = st.floats(allow_nan=False, allow_infinity=False)
# What a real host reports: non-negative amounts, percentages within 0..100, byte counts
# within 63 bits. Outside these the decoder refuses the answer (see test_agent_answers).
AMOUNT = st.floats(min_value=0, max_value=1e15)
PERCENT = st.floats(min_value=0, max_value=100)
BYTES = st.integers(min_value=0, max_value=2**63 - 1)
SCALAR = st.booleans() | st.integers(1 - 2**63, 2**63 - 1) | FINITE | st.text(max_size=20)
CHECKS = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.builds(
        CheckResult,
        name=st.text(max_size=12),
        kind=st.sampled_from(["http", "tcp", "process", "disk_free", "database"]),
        status=st.sampled_from(list(Status)),
        detail=st.text(max_size=40),
        data=st.dictionaries(st.text(max_size=8), SCALAR, max_size=4),
    ),
    max_size=4,
)
FACTS = st.builds(
    Facts,
    hostname=st.text(max_size=20),
    collected_at=AMOUNT,
    status=st.sampled_from(list(Status)),
    uptime_s=AMOUNT,
    cpu_percent=PERCENT,
    load=st.builds(Load, AMOUNT, AMOUNT, AMOUNT),
    memory=st.builds(Memory, BYTES, BYTES, PERCENT),
    disks=st.dictionaries(
        st.text(max_size=12),
        st.builds(DiskUsage, st.text(max_size=12), BYTES, BYTES, PERCENT),
        max_size=3,
    ),
    checks=CHECKS,
)


@settings(max_examples=200, deadline=None)
@given(FACTS)
def test_any_valid_facts_round_trip(facts: Facts) -> None:
    """Every facts value the agent can build decodes back to itself."""
    assert decode_facts(encode_facts(facts)) == facts


def test_action_params_must_be_a_flat_object_of_strings() -> None:
    """Action params: strings only; an empty body means no params."""
    assert decode_action_request(b"") == {}
    assert decode_action_request(b'{"params": {"backend": "10.0.0.5:80"}}') == {
        "backend": "10.0.0.5:80"
    }
    with pytest.raises(WireError, match=r"params\.port: expected a string"):
        decode_action_request(b'{"params": {"port": 80}}')


def test_action_result_needs_the_schema_and_a_result_object() -> None:
    """A successful action answer is the schema plus a `result` object."""
    ok = json.dumps({"schema": wire.SCHEMA, "result": {"promoted": True}}).encode()
    assert decode_action_result(ok) == {"promoted": True}
    with pytest.raises(WireError, match=r"answer\.result: expected an object"):
        decode_action_result(json.dumps({"schema": wire.SCHEMA, "result": 1}).encode())
