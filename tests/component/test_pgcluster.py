"""PgCluster against the machine's real PostgreSQL 15: a primary, a streaming replica,
promotion, a snapshot copy, and a corrupted data page that the checksums catch."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.sandbox.pgcluster import PG_BIN, PgCluster, PgError, scratch_dir
from tests.support.services import free_port, need_binary

pytestmark = pytest.mark.services


def _wait_for(cluster: PgCluster, query: str, want: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    got = ""
    while time.monotonic() < end:
        got = cluster.sql(query)
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{query!r} gave {got!r}, not {want!r}, within {deadline_s}s")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """Where the data lives: a scratch dir the postgres user can always reach (pytest's
    own tmp dirs turn 0700 whenever another pytest session starts)."""
    need_binary("postgres", str(PG_BIN))
    path = scratch_dir("drwatch-pgtest-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_path(base: Path, request: pytest.FixtureRequest) -> Path:
    """Each test's own directory inside `base`."""
    path = base / str(request.node.name)
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def primary(base: Path) -> Iterator[PgCluster]:
    cluster = PgCluster(base / "primary", free_port())
    cluster.initdb()
    cluster.start()
    cluster.sql("CREATE TABLE rows (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    try:
        yield cluster
    finally:
        cluster.stop("immediate")


@pytest.fixture
def replica(primary: PgCluster, tmp_path: Path) -> Iterator[PgCluster]:
    cluster = PgCluster.replica_of(primary, tmp_path / "replica", free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")


def test_a_new_cluster_has_checksums_and_answers_only_on_loopback(primary: PgCluster) -> None:
    """initdb turns data checksums on; the server listens on 127.0.0.1 and its own port."""
    assert primary.running()
    assert primary.sql("SHOW data_checksums") == "on"
    assert primary.sql("SHOW listen_addresses") == "127.0.0.1"
    assert primary.sql("SHOW port") == str(primary.port)
    assert primary.in_recovery() is False
    assert primary.integrity().ok


def test_a_replica_streams_rows_and_promotes_once(primary: PgCluster, replica: PgCluster) -> None:
    """The base-backup replica is in recovery, receives new rows, and promotes; a second
    promote is a no-op that says it was already primary."""
    assert replica.in_recovery() is True
    assert replica.system_identifier() == primary.system_identifier()
    primary.sql("INSERT INTO rows DEFAULT VALUES")
    want = primary.sql("SELECT max(id) FROM rows")
    _wait_for(replica, "SELECT max(id) FROM rows", want)
    assert replica.promote() == "replica"
    assert replica.in_recovery() is False
    assert replica.promote() == "primary"
    replica.sql("INSERT INTO rows DEFAULT VALUES")  # it takes writes now


def test_stop_fast_and_immediate_and_start_again(primary: PgCluster, tmp_path: Path) -> None:
    """A copy stops both ways and starts again with its rows; stopping twice is fine."""
    copy = primary.snapshot_to(tmp_path / "copy")
    copy.port = free_port()
    copy.start()
    assert copy.running()
    copy.stop("immediate")
    assert not copy.running()
    copy.stop("immediate")
    copy.start()  # crash recovery after the immediate stop
    copy.stop("fast")
    assert not copy.running()
    with pytest.raises(PgError):
        copy.sql("SELECT 1", timeout_s=2)


def test_a_server_whose_data_dir_vanished_is_still_stopped(
    primary: PgCluster, tmp_path: Path
) -> None:
    """Someone removes the data directory under a running server: stop still ends the
    postmaster it started (the pid file is gone, the process is not)."""
    copy = primary.snapshot_to(tmp_path / "doomed")
    copy.port = free_port()
    copy.start()
    shutil.rmtree(copy.data_dir)
    assert copy.running()
    copy.stop("fast")
    assert not copy.running()
    with pytest.raises(PgError):
        copy.sql("SELECT 1", timeout_s=2)


def test_a_snapshot_holds_the_rows_of_its_moment(primary: PgCluster, tmp_path: Path) -> None:
    """Rows written after the snapshot are absent from it; rows before are present."""
    primary.sql("INSERT INTO rows DEFAULT VALUES")
    before = primary.sql("SELECT max(id) FROM rows")
    snap = primary.snapshot_to(tmp_path / "snap")
    primary.sql("INSERT INTO rows DEFAULT VALUES")
    snap.port = free_port()
    snap.start()
    try:
        assert snap.in_recovery() is False  # a base backup without -R starts as a primary
        assert snap.sql("SELECT max(id) FROM rows") == before
    finally:
        snap.stop("immediate")


def test_a_stopped_cluster_is_copied_file_by_file(primary: PgCluster, tmp_path: Path) -> None:
    """A copy of a stopped (crashed) cluster starts and recovers, like a volume snapshot."""
    first = primary.snapshot_to(tmp_path / "first")
    first.port = free_port()
    first.start()
    first.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
    first.stop("immediate")
    second = first.snapshot_to(tmp_path / "second")
    second.port = free_port()
    second.start()
    try:
        assert second.sql("SELECT x FROM t") == "42"
    finally:
        second.stop("immediate")


def test_a_corrupted_page_fails_its_checksum(primary: PgCluster, tmp_path: Path) -> None:
    """Bytes flipped on disk in a table's page: after a restart, reading it fails and
    pg_stat_database counts a checksum failure; integrity is no longer ok; a snapshot
    taken then copies the damage."""
    victim = primary.snapshot_to(tmp_path / "victim")
    victim.port = free_port()
    victim.start()
    try:
        victim.sql("CREATE TABLE probe AS SELECT g AS x FROM generate_series(1, 500) g")
        assert victim.integrity("probe").ok
        damaged = victim.corrupt_page("probe")
        assert damaged.is_file()
        victim.restart()
        result = victim.integrity("probe")
        assert not result.ok
        assert result.checksums is True
        assert result.probe_error is not None
        assert "checksum" in result.probe_error or "invalid page" in result.probe_error
        assert result.checksum_failures >= 1
        # A copy taken now (a base backup of the running server) keeps the bad page.
        copy = victim.snapshot_to(tmp_path / "copy")
        copy.port = free_port()
        copy.start()
        try:
            assert copy.integrity("probe").probe_error is not None
        finally:
            copy.stop("immediate")
    finally:
        victim.stop("immediate")
