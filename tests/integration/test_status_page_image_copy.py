"""The status page's backups panel in real headless Chromium: an image copy still on its
way (the warning `image_copy_pending`), and, with several watchers, who runs the
backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from drwatch.backup.catalogue import Entry
from drwatch.backup.manifest import Manifest
from drwatch.backup.model import State
from drwatch.backup.rpo import image_copies_pending
from drwatch.backup.service import _finding_doc
from tests.integration.test_status_page import BackupsSeen, _page_with
from tests.support.operator_services import dom_text

pytestmark = pytest.mark.services
NOW = 1_796_000_000.0


def copying(image: str, region: str, copy_id: str) -> Entry:
    """An image check's entry while the copy it started is not available yet."""
    source = {"name": image, "region": region, "image_id": copy_id, "groups": "app"}
    manifest = Manifest(f"images-x-{image}", "images", "image", NOW - 90, "", (), "none",
                        (), 0, source, {})  # fmt: skip
    return Entry(manifest.backup_id, "images", "image", "standby_region", NOW - 90,
                 State.PENDING, "copy started", manifest=manifest)  # fmt: skip


class CopyPending(BackupsSeen):
    def status_part(self, now: float) -> dict[str, object]:
        part = super().status_part(now)
        found = image_copies_pending([copying("drwatch-app", "eu-west-1", "ami-0c0")], NOW)
        part["findings"] = [_finding_doc(d) for d in found]
        return part


async def test_page_shows_an_image_copy_still_pending(tmp_path: Path) -> None:
    """The panel lists the pending copy as a warning naming the image, its group, the
    region and the copy; without it the list is empty."""
    dom = await _page_with(tmp_path, CopyPending())
    assert '<li class="warn" data-finding="image_copy_pending">' in dom
    text = dom_text(dom)
    assert "image drwatch-app (group app) missing in eu-west-1: copy ami-0c0 started" in text

    plain = await _page_with(tmp_path, BackupsSeen())
    assert 'data-finding="image_copy_pending"' not in plain


class Follower(BackupsSeen):
    def status_part(self, now: float) -> dict[str, object]:
        part = super().status_part(now)
        backups = part["backups"]
        assert isinstance(backups, dict)
        backups["sharing"] = {"shared": True, "leader": "drwatch-1", "runs_backups": False,
                              "synced_at": None, "pending_rows": 0, "error": ""}  # fmt: skip
        return part


async def test_a_followers_page_says_the_leader_runs_the_backups(tmp_path: Path) -> None:
    """A follower's panel names the watcher that runs the backups and says when it last
    read the shared catalogue (here: not yet)."""
    text = dom_text(await _page_with(tmp_path, Follower()))
    assert (
        "Backups run on the leader (drwatch-1); this is the shared catalogue, not read yet." in text
    )
