"""The agent wire: request and answer signing, the facts schema, and its strict decoder.

Both sides import this module: the agent (server) and the daemon's client
(`drwatch.observe.agent`). It imports nothing from the daemon side.

Signing, protocol v2
--------------------
Every request carries five headers:

- `X-Drwatch-Version`: `2`
- `X-Drwatch-Target`: the instance id of the agent the request is meant for
- `X-Drwatch-Timestamp`: the sender's clock, epoch seconds as decimal text (`1764130000.123456`)
- `X-Drwatch-Nonce`: 16 to 64 hex digits, fresh per request
- `X-Drwatch-Signature`: lower-case hex HMAC-SHA256, keyed with the agent's secret, over
  the canonical string, which is these seven lines joined by `\\n` (no trailing newline):

      drwatch-agent-v2
      <X-Drwatch-Target, exactly as sent>
      <METHOD, upper case>
      <path as sent, percent-encoded, with its query string if any>
      <X-Drwatch-Timestamp, exactly as sent>
      <X-Drwatch-Nonce, exactly as sent>
      <lower-case hex SHA-256 of the request body (of b"" when there is none)>

Naming the target means a request signed for one agent is refused by every other
agent, even one that shares the secret. The nonce makes two honest requests in the
same clock tick differ: the agent refuses a signature it has already seen (a replay).

Every answer the agent gives to an authenticated request carries
`X-Drwatch-Answer-Signature`: the hex HMAC-SHA256, with the same key, over

      drwatch-agent-v2-answer
      <the request's X-Drwatch-Target>
      <the request's X-Drwatch-Nonce>
      <HTTP status code, decimal>
      <lower-case hex SHA-256 of the answer body>

so the daemon accepts only an answer made by a holder of the key, for the request it
sent, with the status and body it reads. Refusals (401, 413) are not signed.

The key is either one secret shared by every agent, or a per-host secret derived from
a master secret that only the watcher holds: `derive_host_secret(master, instance_id)`.

Protocol v1 (no target, unsigned answers; its first line is `drwatch-agent-v1` and the
target line is absent) is accepted only by an agent configured with `accept_v1 = true`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from drwatch.errors import WireError

SCHEMA = "drwatch.agent/v1"
SIGNING_VERSION = "drwatch-agent-v2"
SIGNING_VERSION_V1 = "drwatch-agent-v1"
ANSWER_SIGNING_VERSION = "drwatch-agent-v2-answer"
HOST_SECRET_LABEL = b"drwatch-agent-host-secret-v2\n"
PROTOCOL = "2"
VERSION_HEADER = "X-Drwatch-Version"
TARGET_HEADER = "X-Drwatch-Target"
TIMESTAMP_HEADER = "X-Drwatch-Timestamp"
NONCE_HEADER = "X-Drwatch-Nonce"
SIGNATURE_HEADER = "X-Drwatch-Signature"
ANSWER_SIGNATURE_HEADER = "X-Drwatch-Answer-Signature"
FACTS_PATH = "/v1/facts"
ACTIONS_PATH = "/v1/actions/{name}"
# An instance id or host name: no spaces or newlines, so the canonical lines stay lines.
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Scalar = str | int | float | bool


# --- signing -------------------------------------------------------------------------------


def valid_target(target: str) -> bool:
    """True when `target` can name an agent: 1-128 of [A-Za-z0-9._:-], no leading symbol."""
    return bool(_TARGET.match(target))


def canonical_string(
    method: str, path: str, timestamp: str, nonce: str, body: bytes, *, target: str | None
) -> bytes:
    """The exact bytes that are signed (see the module docstring); `target=None` is v1."""
    digest = hashlib.sha256(body).hexdigest()
    head = (SIGNING_VERSION_V1,) if target is None else (SIGNING_VERSION, target)
    lines = (*head, method.upper(), path, timestamp, nonce, digest)
    return "\n".join(lines).encode("utf-8")


def sign(
    secret: bytes,
    *,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    target: str | None,
) -> str:
    """The hex HMAC-SHA256 signature of one request (`target=None`: protocol v1)."""
    message = canonical_string(method, path, timestamp, nonce, body, target=target)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed_headers(
    secret: bytes, method: str, path: str, body: bytes, *, now: float, target: str
) -> dict[str, str]:
    """The v2 auth headers for a request to the agent `target`, sent at `now` (epoch s)."""
    if not valid_target(target):
        raise WireError(f"cannot sign for target {target[:64]!r}: not an instance id")
    timestamp = f"{now:.6f}"
    nonce = secrets.token_hex(16)
    signature = sign(
        secret,
        method=method,
        path=path,
        timestamp=timestamp,
        nonce=nonce,
        body=body,
        target=target,
    )
    return {
        VERSION_HEADER: PROTOCOL,
        TARGET_HEADER: target,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature,
    }


def signed_headers_v1(
    secret: bytes, method: str, path: str, body: bytes, *, now: float
) -> dict[str, str]:
    """Protocol v1 headers, as a watcher older than v2 sends them (tests, upgrades)."""
    timestamp = f"{now:.6f}"
    nonce = secrets.token_hex(16)
    signature = sign(
        secret, method=method, path=path, timestamp=timestamp, nonce=nonce, body=body, target=None
    )
    return {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: signature}


def signature_matches(expected: str, given: str) -> bool:
    """Constant-time comparison, so timing does not reveal how much of a guess was right."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


def sign_answer(secret: bytes, *, target: str, nonce: str, status: int, body: bytes) -> str:
    """The hex HMAC-SHA256 over an answer, bound to the request's target and nonce."""
    digest = hashlib.sha256(body).hexdigest()
    lines = (ANSWER_SIGNING_VERSION, target, nonce, str(status), digest)
    return hmac.new(secret, "\n".join(lines).encode("utf-8"), hashlib.sha256).hexdigest()


def answer_refusal(
    secret: bytes, *, target: str, nonce: str, status: int, body: bytes, given: str | None
) -> str:
    """Empty when `given` signs this answer to this request; otherwise why not."""
    if not given:
        return "answer not signed (an agent older than protocol v2, or not the agent)"
    if not _HEX64.match(given):
        return "answer signature malformed"
    expected = sign_answer(secret, target=target, nonce=nonce, status=status, body=body)
    if not signature_matches(expected, given):
        return "answer signature does not match (another key, request or body)"
    return ""


def derive_host_secret(master: bytes, instance_id: str) -> bytes:
    """One host's secret: HMAC-SHA256(master, label + instance id), as 64 hex characters.

    A host holds only its own; a leaked host secret opens that host and no other.
    """
    if not valid_target(instance_id):
        raise WireError(f"cannot derive a secret for {instance_id[:64]!r}: not an instance id")
    mac = hmac.new(master, HOST_SECRET_LABEL + instance_id.encode("ascii"), hashlib.sha256)
    return mac.hexdigest().encode("ascii")


# --- the facts payload ---------------------------------------------------------------------


class Status(StrEnum):
    """A check's verdict. Overall status: critical > warning > unknown > ok."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


_SEVERITY = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: list[Status]) -> Status:
    """The overall status of several results; `ok` when there are none."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.OK)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One local check's result. `data` holds flat, machine-readable values (see docs/agent.md)."""

    name: str
    kind: str
    status: Status
    detail: str = ""
    data: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiskUsage:
    mount: str
    total_bytes: int
    free_bytes: int
    used_percent: float


@dataclass(frozen=True, slots=True)
class Memory:
    total_bytes: int
    available_bytes: int
    used_percent: float


@dataclass(frozen=True, slots=True)
class Load:
    """Load averages over 1, 5 and 15 minutes."""

    m1: float
    m5: float
    m15: float


@dataclass(frozen=True, slots=True)
class Facts:
    """What `GET /v1/facts` returns. `checks` and `disks` are keyed by name and mount."""

    hostname: str
    collected_at: float
    status: Status
    uptime_s: float
    cpu_percent: float
    load: Load
    memory: Memory
    disks: Mapping[str, DiskUsage] = field(default_factory=dict)
    checks: Mapping[str, CheckResult] = field(default_factory=dict)
    schema: str = SCHEMA


def check_to_dict(result: CheckResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "kind": result.kind,
        "status": result.status.value,
        "detail": result.detail,
        "data": dict(result.data),
    }


def facts_to_dict(facts: Facts) -> dict[str, Any]:
    """The facts as plain JSON-ready data; the keys are the stable wire keys."""
    return {
        "schema": facts.schema,
        "hostname": facts.hostname,
        "collected_at": facts.collected_at,
        "status": facts.status.value,
        "uptime_s": facts.uptime_s,
        "cpu_percent": facts.cpu_percent,
        "load": {"1m": facts.load.m1, "5m": facts.load.m5, "15m": facts.load.m15},
        "memory": {
            "total_bytes": facts.memory.total_bytes,
            "available_bytes": facts.memory.available_bytes,
            "used_percent": facts.memory.used_percent,
        },
        "disks": {
            mount: {
                "mount": d.mount,
                "total_bytes": d.total_bytes,
                "free_bytes": d.free_bytes,
                "used_percent": d.used_percent,
            }
            for mount, d in facts.disks.items()
        },
        "checks": {name: check_to_dict(c) for name, c in facts.checks.items()},
    }


def encode_facts(facts: Facts) -> bytes:
    return encode_json(facts_to_dict(facts))


def encode_json(data: Mapping[str, Any]) -> bytes:
    """Compact JSON; non-finite floats are refused (JSON has none)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


# --- the strict decoder --------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise WireError(f"{name} is not a JSON number")


# An answer nests at most facts -> checks -> check -> data -> value; an action's result a
# little more. Anything deeper is not an agent talking.
MAX_DEPTH = 16
# Keys per object (checks, disks, a check's data): a host has a few dozen at most.
MAX_KEYS = 512
# Integers are byte counts and the like: beyond 2**63 is not a real value (and a 4,000-digit
# one would overflow every float conversion downstream).
MAX_INT = 2**63 - 1


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from bytes, or WireError saying why not (never anything else)."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except WireError:
        raise
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, oversized ints
        raise WireError(f"not JSON: {str(err)[:200]}") from None
    if not isinstance(value, dict):
        raise WireError(f"expected a JSON object, got {type(value).__name__}")
    _check_shape(value)
    return value


def _check_shape(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, objects with more than MAX_KEYS keys and
    integers outside +-MAX_INT, anywhere in the document, naming where (iteratively:
    no recursion, whatever the depth)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise WireError(f"{where or 'JSON'}: nested deeper than {MAX_DEPTH} levels")
            if len(item) > MAX_KEYS:
                raise WireError(f"{where or 'JSON'}: more than {MAX_KEYS} entries")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((v, depth + 1, _child(where, k)) for k, v in pairs)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INT:
            raise WireError(f"{where}: number out of range ({len(str(abs(item)))} digits)")


def _child(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    shown = str(key)[:40]
    return f"{where}.{shown}" if where else shown


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise WireError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise WireError(f"{where}.{key}: missing")
    return obj[key]


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise WireError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


def _num(
    obj: Mapping[str, Any], key: str, where: str, low: float = 0.0, high: float = 1e15
) -> float:
    """A finite number within [low, high]; the defaults fit durations and counters."""
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{where}.{key}: expected a number, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise WireError(f"{where}.{key}: number out of range")
    number = float(value)
    if not math.isfinite(number):
        raise WireError(f"{where}.{key}: expected a finite number")
    if not low <= number <= high:
        raise WireError(f"{where}.{key}: {number:g} is outside {low:g}..{high:g}")
    return number


def _percent(obj: Mapping[str, Any], key: str, where: str) -> float:
    return _num(obj, key, where, 0.0, 100.0)


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    """A non-negative integer that fits in 63 bits (byte counts)."""
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{where}.{key}: expected an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_INT:
        raise WireError(f"{where}.{key}: integer out of range 0..2**63-1")
    return value


def _status(obj: Mapping[str, Any], key: str, where: str) -> Status:
    value = _str(obj, key, where)
    try:
        return Status(value)
    except ValueError:
        raise WireError(
            f"{where}.{key}: {value!r} is not one of ok|warning|critical|unknown"
        ) from None


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise WireError(f"{where}: integer out of range")
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise WireError(f"{where}: expected a string, number or boolean, got {type(value).__name__}")


def _keyed(
    obj: Mapping[str, Any], key: str, where: str, item: Callable[[Any, str], Any]
) -> dict[str, Any]:
    value = _get(obj, key, where)
    if not isinstance(value, dict):
        raise WireError(f"{where}.{key}: expected an object, got {type(value).__name__}")
    return {k: item(v, f"{where}.{key}.{k}") for k, v in value.items()}


def decode_check(obj: Any, where: str) -> CheckResult:
    data = _get(obj, "data", where)
    if not isinstance(data, dict):
        raise WireError(f"{where}.data: expected an object, got {type(data).__name__}")
    return CheckResult(
        name=_str(obj, "name", where),
        kind=_str(obj, "kind", where),
        status=_status(obj, "status", where),
        detail=_str(obj, "detail", where),
        data={k: _scalar(v, f"{where}.data.{k}") for k, v in data.items()},
    )


def _decode_disk(obj: Any, where: str) -> DiskUsage:
    return DiskUsage(
        mount=_str(obj, "mount", where),
        total_bytes=_int(obj, "total_bytes", where),
        free_bytes=_int(obj, "free_bytes", where),
        used_percent=_percent(obj, "used_percent", where),
    )


def _decode_memory(obj: Any, where: str) -> Memory:
    return Memory(
        total_bytes=_int(obj, "total_bytes", where),
        available_bytes=_int(obj, "available_bytes", where),
        used_percent=_percent(obj, "used_percent", where),
    )


def _decode_load(obj: Any, where: str) -> Load:
    return Load(m1=_num(obj, "1m", where), m5=_num(obj, "5m", where), m15=_num(obj, "15m", where))


def decode_facts(raw: bytes) -> Facts:
    """Facts from the agent's answer, or WireError naming the first thing that is wrong.

    Unknown keys are ignored (additive changes within v1); a different `schema` is refused.
    """
    obj = parse_json_object(raw)
    schema = _str(obj, "schema", "facts")
    if schema != SCHEMA:
        raise WireError(f"facts.schema: unknown schema version {schema[:64]!r} (want {SCHEMA})")
    return Facts(
        schema=schema,
        hostname=_str(obj, "hostname", "facts"),
        collected_at=_num(obj, "collected_at", "facts"),
        status=_status(obj, "status", "facts"),
        uptime_s=_num(obj, "uptime_s", "facts"),
        cpu_percent=_percent(obj, "cpu_percent", "facts"),
        load=_decode_load(_get(obj, "load", "facts"), "facts.load"),
        memory=_decode_memory(_get(obj, "memory", "facts"), "facts.memory"),
        disks=_keyed(obj, "disks", "facts", _decode_disk),
        checks=_keyed(obj, "checks", "facts", decode_check),
    )


# --- actions ---------------------------------------------------------------------------------


def encode_action_request(params: Mapping[str, str]) -> bytes:
    return encode_json({"params": dict(params)})


def decode_action_request(raw: bytes) -> dict[str, str]:
    """The params of `POST /v1/actions/{name}`: a flat object of strings. Empty body: no params."""
    if not raw.strip():
        return {}
    obj = parse_json_object(raw)
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise WireError(f"params: expected an object, got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(value, str):
            raise WireError(f"params.{key}: expected a string, got {type(value).__name__}")
    return params


def decode_action_result(raw: bytes) -> dict[str, object]:
    """The `result` object of a successful action answer."""
    obj = parse_json_object(raw)
    schema = _str(obj, "schema", "answer")
    if schema != SCHEMA:
        raise WireError(f"answer.schema: unknown schema version {schema[:64]!r} (want {SCHEMA})")
    result = _get(obj, "result", "answer")
    if not isinstance(result, dict):
        raise WireError(f"answer.result: expected an object, got {type(result).__name__}")
    return result


def decode_error(raw: bytes) -> str:
    """The `error` text of a refused action, or a short description when there is none."""
    try:
        obj = parse_json_object(raw)
    except WireError:
        return "no error message"
    error = obj.get("error")
    return error[:500] if isinstance(error, str) else "no error message"


# --- the restore stream ------------------------------------------------------------------------
#
# `POST /v1/restore?backup_id=ID` carries a dump's plaintext into the agent's local
# PostgreSQL. The request is signed as above with an empty body (the path and query are
# signed; nothing of the stream is read before the signature passes), and its body is a
# sequence of frames, each authenticated on its own before the agent uses a byte of it:
#
#     <4-byte big-endian length N> <32-byte HMAC> <N bytes of data>
#
# The HMAC (SHA-256, the agent's key) covers RESTORE_FRAME_VERSION, the request's
# signature (so a frame belongs to this one request), the frame's sequence number and
# the data. A frame of length 0 ends the stream; its HMAC also covers the total bytes
# sent, so a stream cut short (no end frame, or one that counts other bytes) is refused
# as truncated, and frames reordered, dropped or replayed fail their HMAC.

RESTORE_PATH = "/v1/restore"
RESTORE_STATUS_ACTION = "restore_status"
RESTORE_FRAME_VERSION = "drwatch-restore-frame-v1"
FRAME_HEADER = 36
MAX_FRAME = 1 << 20


def frame_mac(secret: bytes, signature: str, seq: int, data: bytes, *, total: int = -1) -> bytes:
    """The HMAC of frame `seq` of the stream opened by the request signed `signature`;
    `total` is given (the bytes sent before it) only for the end frame."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(f"{RESTORE_FRAME_VERSION}\n{signature}\n{seq}\n{total}\n".encode("ascii"))
    mac.update(data)
    return mac.digest()


def encode_frame(secret: bytes, signature: str, seq: int, data: bytes) -> bytes:
    if not 0 < len(data) <= MAX_FRAME:
        raise WireError(f"a data frame holds 1 to {MAX_FRAME} bytes (got {len(data)})")
    return len(data).to_bytes(4, "big") + frame_mac(secret, signature, seq, data) + data


def encode_end_frame(secret: bytes, signature: str, seq: int, total: int) -> bytes:
    return (0).to_bytes(4, "big") + frame_mac(secret, signature, seq, b"", total=total)


class FrameReader:
    """Reads and checks the frames of one restore stream; `read(n)` is an async callable
    returning exactly n bytes, or fewer at the end of the body."""

    def __init__(
        self, secret: bytes, signature: str, read: Callable[[int], Any], max_bytes: int
    ) -> None:
        self._secret = secret
        self._signature = signature
        self._read = read
        self._max = max_bytes
        self.seq = 0
        self.total = 0
        self.ended = False

    async def next(self) -> bytes:
        """The next frame's data; b"" once the end frame has checked out. WireError when
        the stream is cut short, a frame fails its HMAC, or the stream grows past the
        bound."""
        if self.ended:
            return b""
        header = await self._read(FRAME_HEADER)
        if len(header) < FRAME_HEADER:
            raise WireError(f"stream truncated after {self.total} bytes (no end frame)")
        size, mac = int.from_bytes(header[:4], "big"), header[4:]
        if size > MAX_FRAME:
            raise WireError(f"frame {self.seq}: {size} bytes (at most {MAX_FRAME})")
        if self.total + size > self._max:
            raise WireError(f"stream larger than the agent's bound ({self._max} bytes)")
        data = await self._read(size) if size else b""
        if len(data) < size:
            raise WireError(f"stream truncated after {self.total + len(data)} bytes (mid-frame)")
        total = self.total if size == 0 else -1
        expected = frame_mac(self._secret, self._signature, self.seq, data, total=total)
        if not hmac.compare_digest(expected, mac):
            raise WireError(f"frame {self.seq} failed its HMAC (altered, reordered or cut)")
        self.seq += 1
        self.total += size
        self.ended = size == 0
        return data
