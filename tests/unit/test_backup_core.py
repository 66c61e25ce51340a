"""Pure parts of backups: OpenPGP headers, S3 part planning, RPO compliance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drwatch.backup.catalogue import Entry
from drwatch.backup.config import GIB, MIB, Retention
from drwatch.backup.model import State
from drwatch.backup.openpgp import inspect
from drwatch.backup.pipeline import MAX_PART, MAX_PARTS, MIN_PART, ciphertext_bound, plan
from drwatch.backup.retention import to_prune
from drwatch.backup.rpo import BackupFinding, Objective, compliance, findings

KEY = "A87423D59F674AB3"
OTHER = "1122334455667788"
SEIPD = bytes([0xD2, 0x10]) + b"\x01" + b"x" * 15  # new-format tag 18, 16 bytes


def pkesk(key_id: str, *, old_format: bool = True) -> bytes:
    body = b"\x03" + bytes.fromhex(key_id) + b"\x12" + b"m" * 40
    if old_format:
        return bytes([0x84, len(body)]) + body
    return bytes([0xC1, len(body)]) + body


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (pkesk(KEY) + SEIPD, None),
        (pkesk(KEY, old_format=False) + SEIPD, None),
        (pkesk(KEY) + pkesk(OTHER) + SEIPD, "not the configured recipient"),
        (pkesk(OTHER) + SEIPD, f"key id(s) {OTHER}"),
        (b"PGDMP\x01\x0e\x00 a pg_dump archive", "not a packet header"),
        (b"-----BEGIN PGP MESSAGE-----\n", "ASCII-armored"),
        (SEIPD, "no public-key encrypted session key"),
        (pkesk(KEY)[:6], "truncated"),
        (pkesk(KEY) + bytes([0xCB, 0x05]) + b"hello", "packet tag 11"),  # literal data
        (b"", "truncated"),
    ],
    ids=[
        "ours",
        "ours-new-format",
        "ours-and-another",
        "another",
        "plaintext",
        "armored",
        "no-session-key",
        "truncated",
        "literal-after-pkesk",
        "empty",
    ],
)
def test_an_objects_head_is_judged(head: bytes, problem: str | None) -> None:
    """Only ciphertext to the configured key id passes; everything else says why."""
    found = inspect(head).addressed_to(frozenset({KEY}))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@given(st.binary(max_size=64))
def test_random_bytes_never_pass_for_ciphertext_to_our_key(data: bytes) -> None:
    """Whatever an object holds, passing needs our key id spelled out in a PKESK."""
    result = inspect(data).addressed_to(frozenset({KEY}))
    assert result is not None or bytes.fromhex(KEY) in data


@given(
    chunk=st.integers(min_value=5 * MIB, max_value=5 * 1024 * GIB),
    expected=st.none() | st.integers(min_value=0, max_value=50 * 1024 * GIB),
)
def test_plans_respect_s3_limits(chunk: int, expected: int | None) -> None:
    """Parts of 5 MiB to 5 GiB, and a chunk's ciphertext fits 10,000 parts and 5 TiB,
    whatever the stream's real size turns out to be."""
    p = plan(chunk, expected)
    assert MIN_PART <= p.part_size <= MAX_PART
    assert p.part_size % MIB == 0
    assert ciphertext_bound(p.chunk_plain) <= p.part_size * MAX_PARTS
    assert ciphertext_bound(p.chunk_plain) <= 5 * 1024 * GIB
    assert 0 < p.chunk_plain <= chunk


def test_part_size_grows_with_the_expected_size() -> None:
    """Small dumps use 5 MiB parts; a 200 GiB dump in one big chunk needs bigger ones."""
    assert plan(GIB).part_size == MIN_PART
    assert plan(1024 * GIB, expected_size=GIB).part_size == MIN_PART
    big = plan(1024 * GIB, expected_size=200 * GIB)
    assert big.part_size == 21 * MIB
    assert big.chunk_plain >= 200 * GIB


T0 = 1_000_000.0
LOCS = ("primary", "offsite")


def entry(n: int, at: float, state: State, location: str = "primary") -> Entry:
    return Entry(f"orders-{n:04d}", "orders", "dump", location, at, state)


OBJ = Objective("orders", rpo=600.0, locations=LOCS, since=T0)


@pytest.mark.parametrize(
    ("entries", "now", "expect"),
    [
        # no backups yet, watched for less than the RPO: nothing to say
        ([], T0 + 300, {}),
        # no backups after the RPO: breached at both locations
        ([], T0 + 601, {"primary": {"rpo"}, "offsite": {"rpo"}}),
        # fresh verified at both: fine
        (
            [entry(1, T0 + 500, State.VERIFIED), entry(1, T0 + 500, State.VERIFIED, "offsite")],
            T0 + 700,
            {},
        ),
        # the newest is corrupt, the older verified one still counts, and is too old
        (
            [
                entry(1, T0, State.VERIFIED),
                entry(2, T0 + 500, State.CORRUPT),
                entry(2, T0 + 500, State.VERIFIED, "offsite"),
            ],
            T0 + 700,
            {"primary": {"rpo"}},
        ),
        # three failures in a row off-site after a verified one: failing (and breached)
        (
            [entry(1, T0, State.VERIFIED, "offsite"), entry(1, T0, State.VERIFIED)]
            + [entry(n, T0 + 100 * n, State.FAILED, "offsite") for n in (2, 3, 4)]
            + [entry(n, T0 + 100 * n, State.VERIFIED) for n in (2, 3, 4)],
            T0 + 650,
            {"offsite": {"rpo", "failing"}},
        ),
        # pending runs do not break a failure streak, nor count as verified
        (
            [
                entry(n, T0 + 100 * n, s)
                for n, s in [
                    (1, State.FAILED),
                    (2, State.PENDING),
                    (3, State.MISSING),
                    (4, State.FAILED),
                ]
            ]
            + [entry(4, T0 + 400, State.VERIFIED, "offsite")],
            T0 + 500,
            {"primary": {"failing"}},
        ),
    ],
    ids=["fresh-start", "never", "fine", "corrupt-newest", "failing", "pending"],
)
def test_rpo_compliance(entries: list[Entry], now: float, expect: dict[str, set[str]]) -> None:
    """Findings per location from the catalogue alone, with `now` passed in."""
    names = {BackupFinding.RPO_BREACHED: "rpo", BackupFinding.FAILING: "failing"}
    got: dict[str, set[str]] = {}
    for d in findings(compliance(entries, [OBJ], now, failing_after=3)):
        got.setdefault(d.location, set()).add(names[d.finding])
    assert got == expect


def test_the_breach_message_names_class_location_and_age() -> None:
    status = compliance([entry(1, T0, State.VERIFIED)], [OBJ], T0 + 900, failing_after=3)
    diag = findings(status)
    assert diag[0].message == "orders at primary: newest verified 15m old, RPO 10m"
    assert diag[0].age == 900.0
    assert diag[1].message == "orders at offsite: no verified backup, RPO 10m"


def test_retention_keeps_the_newest_and_never_the_last_verified() -> None:
    """keep=2, max_age=1h at the primary: the third-newest goes; the newest verified
    stays even when it is old and beyond `keep` (newer ones are all corrupt); pending
    runs are never touched; another location has its own rule."""
    rules = {"primary": Retention(keep=2, max_age=3600.0), "offsite": Retention(keep=5)}
    entries = [
        entry(1, T0, State.VERIFIED),
        entry(2, T0 + 100, State.VERIFIED),
        entry(3, T0 + 200, State.CORRUPT),
        entry(4, T0 + 300, State.CORRUPT),
        entry(5, T0 + 400, State.PENDING),
        entry(1, T0, State.VERIFIED, "offsite"),
        entry(2, T0 + 100, State.VERIFIED, "offsite"),
    ]
    pruned = to_prune(entries, rules, T0 + 500)
    assert [(e.backup_id, e.location) for e in pruned] == [
        ("orders-0001", "primary"),
        ("orders-0003", "primary"),
    ]
    later = to_prune(entries, rules, T0 + 7200)  # max_age passed: all but the anchor
    assert [(e.backup_id, e.location) for e in later] == [
        ("orders-0001", "primary"),
        ("orders-0003", "primary"),
        ("orders-0004", "primary"),
    ]
