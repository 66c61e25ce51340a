"""What an object's first bytes say about it: OpenPGP ciphertext, and to whom (RFC 4880).

Pure: bytes in, a verdict out. Verification reads each object's head and asks this
module whether it opens with one or more Public-Key Encrypted Session Key packets
(tag 1) naming only the configured key, followed by encrypted data (tags 9, 18, 20).
Anything else (plaintext, an armored message, a message to another key, a key id
hidden by --throw-keyids) is not a backup drwatch made, and counts as corrupt: two
backup tools have shipped uploading plaintext by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

TAG_PKESK = 1
ENCRYPTED_DATA_TAGS = frozenset({9, 18, 20})  # SED, SEIPD, AEAD
# Enough for several PKESK packets (an RSA-4096 one is about 530 bytes).
HEAD_BYTES = 4096


@dataclass(frozen=True)
class Envelope:
    """The head of an object: the key ids it is encrypted to, or why it is not ciphertext."""

    key_ids: tuple[str, ...] = ()
    problem: str | None = None

    def addressed_to(self, expected: frozenset[str]) -> str | None:
        """None when the object is ciphertext to the expected keys only, else why not."""
        if self.problem is not None:
            return self.problem
        others = sorted(set(self.key_ids) - expected)
        if others:
            return (
                f"encrypted to key id(s) {', '.join(others)}, not the configured recipient "
                f"({', '.join(sorted(expected))})"
            )
        return None


class _TruncatedError(Exception):
    pass


def inspect(head: bytes) -> Envelope:
    """Parse the packets at the start of an object (`head` is its first HEAD_BYTES)."""
    if head.startswith(b"-----BEGIN PGP"):
        return Envelope(problem="ASCII-armored, not the binary ciphertext drwatch writes")
    key_ids: list[str] = []
    pos = 0
    try:
        while True:
            tag, body_start, body_len = _header(head, pos)
            if tag == TAG_PKESK:
                key_ids.append(_pkesk_key_id(head, body_start))
                pos = body_start + body_len
                continue
            if tag in ENCRYPTED_DATA_TAGS and key_ids:
                return Envelope(key_ids=tuple(key_ids))
            what = "no public-key encrypted session key" if not key_ids else f"packet tag {tag}"
            return Envelope(problem=f"not OpenPGP ciphertext to a public key ({what})")
    except _TruncatedError:
        return Envelope(problem="not OpenPGP ciphertext (truncated or not a packet stream)")
    except ValueError as err:
        return Envelope(problem=f"not OpenPGP ciphertext ({err})")


def _header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of body, body length) of the packet at `pos`; partial lengths give
    the first part's length, which is all the caller needs (it stops there)."""
    first = _byte(buf, pos)
    if not first & 0x80:
        raise ValueError(f"byte {pos} is not a packet header")
    if first & 0x40:  # new format
        tag = first & 0x3F
        o1 = _byte(buf, pos + 1)
        if o1 < 192:
            return tag, pos + 2, o1
        if o1 < 224:
            return tag, pos + 3, ((o1 - 192) << 8) + _byte(buf, pos + 2) + 192
        if o1 == 255:
            return tag, pos + 6, int.from_bytes(_slice(buf, pos + 2, 4), "big")
        return tag, pos + 2, 1 << (o1 & 0x1F)
    tag, length_type = (first >> 2) & 0x0F, first & 0x03
    if length_type == 3:
        return tag, pos + 1, len(buf) - pos - 1
    size = (1, 2, 4)[length_type]
    return tag, pos + 1 + size, int.from_bytes(_slice(buf, pos + 1, size), "big")


def _pkesk_key_id(buf: bytes, start: int) -> str:
    version = _byte(buf, start)
    if version != 3:
        raise ValueError(f"PKESK version {version} (drwatch reads version 3)")
    return _slice(buf, start + 1, 8).hex().upper()


def _byte(buf: bytes, pos: int) -> int:
    if pos >= len(buf):
        raise _TruncatedError
    return buf[pos]


def _slice(buf: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(buf):
        raise _TruncatedError
    return buf[pos : pos + size]
