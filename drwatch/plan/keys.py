"""The key custody section: the backup recipient's key and where its private copies are."""

from __future__ import annotations

from drwatch.config import Config
from drwatch.plan.document import Block, Items, Note, Para, Section, Sub
from drwatch.plan.inputs import Live

KEYS_OFF = (
    "No backup recipient is configured ([backup.recipient]): the key's fingerprint and "
    "where the private key's copies are kept cannot be shown."
)


def keys_section(cfg: Config, live: Live) -> Section:
    blocks: list[Block] = [
        Para(
            "Backups are encrypted to a public key; the private key never goes to a "
            "watched server or into the cloud."
        )
    ]
    backup = cfg.backup
    if backup is None or backup.recipient is None:
        blocks.append(Note("missing", KEYS_OFF))
        return Section("keys", "Key custody", tuple(blocks))
    blocks.append(Para(f"Recipient key fingerprint: {_spaced(backup.recipient.fingerprint)}."))
    blocks.append(Sub("Where the private key's copies are kept"))
    if backup.custody:
        blocks.append(Items(tuple(backup.custody)))
    else:
        blocks.append(
            Note("unmet", "No custody is recorded (backup.custody): who can decrypt a backup?")
        )
    blocks.append(Para(_watcher_copy(backup.watcher_private_key_file is not None)))
    served = (live.backups or {}).get("recipient_fingerprint")
    if served and served != backup.recipient.fingerprint:
        blocks.append(
            Note("unmet", f"The running daemon encrypts to another key: {_spaced(str(served))}.")
        )
    return Section("keys", "Key custody", tuple(blocks))


def _watcher_copy(holds: bool) -> str:
    if holds:
        return (
            "The watcher holds one copy (outside every cloud): it tests restores on a "
            "schedule, and the database ladder's last rung (restore_from_dump) can use it "
            "after an operator's approval."
        )
    return (
        "The watcher holds no copy: restore tests and restoring from a dump are operator "
        "commands run where a copy is kept (`drwatch backup restore-test --key FILE`)."
    )


def _spaced(fingerprint: str) -> str:
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))
