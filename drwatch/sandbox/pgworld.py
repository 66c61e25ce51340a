"""The sandbox's databases, real or simulated (`Options.postgres`).

`RealDatabases` runs PostgreSQL from the machine's binaries (`pgcluster.PgCluster`): every
data volume of the topology is a data directory under `STATE_DIR/pg/volumes/`, every
snapshot a copy under `STATE_DIR/pg/snapshots/` taken when it appears at the provider
(a base backup of a running cluster, a file copy of a stopped one), and a volume made
from a snapshot starts as a copy of that snapshot's directory. A database host runs the
server of the volume attached to it while it is booted and not silenced (a host launched
with the tag `drwatch:db-init = empty`, for restoring a dump, runs a fresh empty server on
its own disk instead, `STATE_DIR/pg/local/INSTANCE`); a fault that
silences it (stop, impair, terminate, zone or region outage) stops the server at once
(`immediate`, a crash). One port belongs to each volume, so the replicas find their
primary again when a new host mounts its volume.

The database facts the simulated agent reports (`check_result`) come from the real
server: role from `pg_is_in_recovery()`, lag from the receive/replay LSNs, integrity from
checksum failures and a read of every block of a probe table. This is the seam the
agent's own `postgres` check replaces when it lands: `agent_plug` asks `check_result`
and nothing else.

`SimulatedDatabases` is the null implementation: the hosts' simulated facts as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from drwatch.agent.wire import CheckResult, Status
from drwatch.logs import get_logger
from drwatch.model.fleet import Role
from drwatch.sandbox.cloud import Seeded
from drwatch.sandbox.cloudview import CloudView
from drwatch.sandbox.hosts import SimHost
from drwatch.sandbox.pgcluster import (
    PgCluster,
    PgError,
    corrupt_file_page,
    pg_bin_dir,
    reachable_by_postgres,
    scratch_dir,
)
from drwatch.sandbox.pgwriter import Writer
from drwatch.sandbox.topology import Topology

log = get_logger(component="sandbox.pg")

PROBE = "drwatch_probe"  # a static table whose every block the integrity check reads
WRITES = "drwatch_writes"
SCHEMA = (  # one statement per psql call: VACUUM refuses to run in a transaction block
    "CREATE TABLE drwatch_writes (seq bigint PRIMARY KEY, at double precision NOT NULL)",
    "CREATE TABLE drwatch_probe AS SELECT g AS n, md5(g::text) AS h"
    " FROM generate_series(1, 2000) g",
    "VACUUM FREEZE drwatch_probe",
    "CHECKPOINT",
)
READ_BACK = "SELECT seq FROM drwatch_writes"
INIT_TAG = "drwatch:db-init"  # "empty": an empty server on the host's own disk (rung 6)
REFRESH_S = 1.0
LAG_SQL = (
    "SELECT pg_is_in_recovery(), "
    "coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0), "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END, "
    "(SELECT timeline_id FROM pg_control_checkpoint()), "
    "(SELECT system_identifier FROM pg_control_system())"
)


class Databases(Protocol):
    """What the sandbox asks of its databases, real or simulated."""

    async def start(self, seeded: Seeded, port: Callable[[], int]) -> None: ...
    async def run_writer(self, target: Callable[[], str | None]) -> None: ...
    async def stop(self) -> None: ...
    async def ready_to_boot(self, host: SimHost, view: CloudView) -> bool: ...
    async def follow(self, hosts: dict[str, SimHost], view: CloudView) -> None: ...
    def check_result(self, host: SimHost) -> CheckResult: ...
    def promote(self, host: SimHost) -> str | None: ...
    def describe(self) -> dict[str, str]: ...
    async def data_facts(self) -> DataFacts | None: ...
    def corrupt(self, kind: str, ident: str) -> None: ...
    def lag(self, instance_id: str, delay_s: str) -> None: ...
    def dump_port(self, host: SimHost) -> int | None: ...


@dataclass(frozen=True)
class DataFacts:
    """What the writer wrote and what survived (epoch seconds), for the drill's `data`."""

    attempted: int
    acked: dict[int, float]
    surviving: frozenset[int] | None  # None: the database did not answer at the end
    fault_at: float | None  # when the server the writer wrote to went down
    error: str = ""
    first_at: float | None = None  # the first acknowledged row


class SimulatedDatabases:
    """The null implementation: no servers; hosts report their simulated facts (their
    corruption comes from the sandbox's marks; a lag is only reported)."""

    def __init__(self) -> None:
        self.lags: dict[str, float] = {}

    async def start(self, seeded: Seeded, port: Callable[[], int]) -> None:
        return None

    async def run_writer(self, target: Callable[[], str | None]) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready_to_boot(self, host: SimHost, view: CloudView) -> bool:
        return True

    async def follow(self, hosts: dict[str, SimHost], view: CloudView) -> None:
        return None

    def check_result(self, host: SimHost) -> CheckResult:
        result = host.database_check()
        lag = self.lags.get(host.instance_id)
        if lag is None:
            return result
        return dataclasses.replace(result, data={**result.data, "lag_s": lag})

    def promote(self, host: SimHost) -> str | None:
        return None

    def describe(self) -> dict[str, str]:
        return {}

    async def data_facts(self) -> DataFacts | None:
        return None

    def corrupt(self, kind: str, ident: str) -> None:
        return None

    def dump_port(self, host: SimHost) -> int | None:
        return None

    def lag(self, instance_id: str, delay_s: str) -> None:
        self.lags[instance_id] = float(delay_s)
        if not self.lags[instance_id]:
            del self.lags[instance_id]


@dataclass
class Facts:
    """The last facts read from one server (refreshed every REFRESH_S)."""

    role: str = "unknown"
    lag_s: float = 0.0
    lag_bytes: int = 0
    timeline: int = 0
    system_identifier: str = ""
    checksum_failures: int = 0
    probe_error: str | None = None
    error: str | None = None
    at: float = field(default_factory=time.time)

    @property
    def corrupt(self) -> bool:
        return self.checksum_failures > 0 or self.probe_error is not None


def read_facts(cluster: PgCluster) -> Facts:
    """Role, lag and integrity from a running server (blocking)."""
    try:
        rec, lag_b, lag_s, tli, sysid = cluster.sql(LAG_SQL, timeout_s=5).split("|")
        integrity = cluster.integrity(PROBE)
    except (PgError, ValueError) as err:
        return Facts(error=str(err))
    return Facts(
        role="replica" if rec == "t" else "primary",
        lag_s=round(float(lag_s), 3),
        lag_bytes=int(float(lag_b)),
        timeline=int(tli),
        system_identifier=sysid,
        checksum_failures=integrity.checksum_failures,
        probe_error=_damage(integrity.probe_error),
    )


def _damage(probe_error: str | None) -> str | None:
    """A probe table that is not there is an empty database (a host waiting for its
    dump), not a damaged one."""
    if probe_error is not None and "does not exist" in probe_error:
        return None
    return probe_error


class RealDatabases:
    """PostgreSQL servers behind the database hosts (see the module's docstring)."""

    def __init__(self, topo: Topology, root: Path) -> None:
        self.topo = topo
        self.link = root  # STATE_DIR/pg: the data, or a link to it (see _place)
        self.root = root
        self.clusters: dict[str, PgCluster] = {}  # volume id -> its data dir and port
        self.snapshots: dict[str, Path] = {}  # snapshot id -> its copy
        self.facts: dict[str, Facts] = {}  # volume id -> the last facts
        self.probe_file = ""  # the probe table's file, relative to a data dir
        self.writer: Writer | None = None
        self.primary_lost_at: float | None = None  # the writer's server went down
        self._port: Callable[[], int] = lambda: 0
        self._view = CloudView()
        self._seeded = Seeded()
        self._target: Callable[[], int | None] = lambda: None
        self._refresher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._scratch = False
        self._failed: set[str] = set()  # snapshots whose copy failed
        self._local: dict[str, str] = {}  # instance id -> its own empty cluster's key

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, seeded: Seeded, port: Callable[[], int]) -> None:
        """The primaries and their streaming replicas, running."""
        if pg_bin_dir() is None:
            raise PgError("PostgreSQL 15 is not installed (./dev system-deps installs it)")
        self._port = port
        self._seeded = seeded
        await asyncio.to_thread(self._clear_leftovers)
        for spec in self.topo.instance:
            if spec.volume and not spec.primary:
                await asyncio.to_thread(self._init_primary, seeded.volumes[spec.volume])
        for spec in self.topo.instance:
            source = self.topo.by_name(spec.primary) if spec.primary else None
            if spec.volume and source is not None and source.volume:
                vid, src = seeded.volumes[spec.volume], seeded.volumes[source.volume]
                await asyncio.to_thread(self._init_replica, vid, src)

    async def run_writer(self, target: Callable[[], str | None]) -> None:
        """Start the writer into `target()` (the instance id the app servers are told is
        the database), then take the seeded snapshots while it writes, oldest first, so a
        restore from one loses exactly what was written after it."""
        self._target = lambda: self._writer_port(target())
        self.writer = Writer(self._target, WRITES)
        self.writer.start()
        for name, sid in self._seeded.snapshots.items():
            vid = next(self._seeded.volumes[s.volume] for s in self.topo.instance
                       if s.volume and name.startswith(f"{s.volume}-snap-"))  # fmt: skip
            await asyncio.sleep(0.5)
            async with self._lock:
                await asyncio.to_thread(self._take_snapshot, sid, vid)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    def _clear_leftovers(self) -> None:
        """End servers a killed sandbox left on this state dir, then start afresh."""
        old = self.link.resolve()
        for pid_file in old.glob("*/*/postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while any(old.glob("*/*/postmaster.pid")) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(old, ignore_errors=True)
        if self.link.is_symlink():
            self.link.unlink()
        self._place()

    def _place(self) -> None:
        """The data goes in STATE_DIR/pg when the postgres user can reach it there; else
        (a 0700 directory above it, run as root) in a scratch dir that STATE_DIR/pg links
        to, removed again at stop."""
        self.link.parent.mkdir(parents=True, exist_ok=True)
        if reachable_by_postgres(self.link.parent):
            self.root = self.link
            self.root.mkdir(exist_ok=True)
            return
        self.root = scratch_dir()
        self.link.symlink_to(self.root, target_is_directory=True)
        self._scratch = True

    def _init_primary(self, vid: str) -> None:
        cluster = PgCluster(self.root / "volumes" / vid, self._port())
        cluster.initdb()
        cluster.start()
        for statement in SCHEMA:
            cluster.sql(statement, timeout_s=30)
        rel = cluster.relation_file(PROBE)
        self.probe_file = str(rel.relative_to(cluster.data_dir))
        self.clusters[vid] = cluster

    def _init_replica(self, vid: str, source_vid: str) -> None:
        source = self.clusters[source_vid]
        cluster = PgCluster.replica_of(source, self.root / "volumes" / vid, self._port())
        cluster.start()
        self.clusters[vid] = cluster

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self.writer is not None:
            await self.writer.stop()
        for cluster in self.clusters.values():
            with contextlib.suppress(PgError):
                await asyncio.to_thread(cluster.stop, "immediate")
        if self._scratch:
            await asyncio.to_thread(self._keep_logs_and_remove)

    def _keep_logs_and_remove(self) -> None:
        """The servers' logs go to STATE_DIR/pg-logs; the scratch data goes away."""
        logs = self.link.parent / "pg-logs"
        logs.mkdir(exist_ok=True)
        for vid, cluster in self.clusters.items():
            with contextlib.suppress(OSError):
                shutil.copyfile(cluster.log_file, logs / f"{vid}.log")
        shutil.rmtree(self.root, ignore_errors=True)
        self.link.unlink(missing_ok=True)

    # --- following the cloud ------------------------------------------------------------------

    async def ready_to_boot(self, host: SimHost, view: CloudView) -> bool:
        """A database host boots once a data volume is attached; its server starts first,
        and its facts are read once, so its agent never answers before its data does."""
        if host.role is not Role.DATABASE:
            return True
        async with self._lock:
            self._view = view
            await asyncio.to_thread(self._materialize, view)
            vid = self._volume_of(host.instance_id, view)
            if vid is None:
                vid = await asyncio.to_thread(self._local_cluster, host.instance_id, view)
            if vid is None:
                return False
            await asyncio.to_thread(self.run_volume, vid)
            self.facts[vid] = await asyncio.to_thread(read_facts, self.clusters[vid])
        return True

    async def follow(self, hosts: dict[str, SimHost], view: CloudView) -> None:
        """Snapshots and volumes get their data; each server runs iff its host is up."""
        async with self._lock:
            self._view = view
            await asyncio.to_thread(self._materialize, view)
            wanted: dict[str, bool] = dict.fromkeys(self.clusters, False)
            for host in hosts.values():
                vid = self._volume_of(host.instance_id, view)
                if vid is not None and host.role is Role.DATABASE:
                    wanted[vid] = wanted[vid] or (host.booted and not host.silent)
            for vid, up in wanted.items():
                running = self.clusters[vid].running()
                if running and not up:
                    await asyncio.to_thread(self._crash, vid)
                elif up and not running:
                    await asyncio.to_thread(self.run_volume, vid)

    def _volume_of(self, instance_id: str, view: CloudView) -> str | None:
        return next(
            (v.id for v in view.volumes.values()
             if instance_id in v.attached_to and v.id in self.clusters),
            self._local.get(instance_id),
        )  # fmt: skip

    def _local_cluster(self, instance_id: str, view: CloudView) -> str | None:
        """A host launched to restore a dump into (tagged `drwatch:db-init = empty`) gets
        a fresh, empty server of its own, as its image would start one (blocking)."""
        inst = view.instances.get(instance_id)
        if inst is None or inst.tags.get(INIT_TAG) != "empty":
            return None
        key = f"local-{instance_id}"
        if key not in self.clusters:
            cluster = PgCluster(self.root / "local" / instance_id, self._port())
            cluster.initdb()
            self.clusters[key] = cluster
            log.info("pg.local_empty", instance=instance_id, port=cluster.port)
        self._local[instance_id] = key
        return key

    def _materialize(self, view: CloudView) -> None:
        for snap in sorted(view.snapshots.values(), key=lambda s: s.started_at):
            seeded = snap.id in self._seeded.snapshots.values()  # run_writer takes those
            todo = snap.id not in self.snapshots and snap.id not in self._failed
            if todo and snap.volume_id in self.clusters and not seeded:
                try:
                    self._take_snapshot(snap.id, snap.volume_id)
                except PgError as err:
                    # Once: a volume made from it holds no database, so its host never
                    # boots and the playbook's wait says so.
                    self._failed.add(snap.id)
                    log.warning("pg.snapshot_failed", snapshot=snap.id, error=str(err))
        for sid in [s for s in self.snapshots if s not in view.snapshots]:
            # Deleted at the provider (backup retention): its copy goes too.
            if sid not in self._seeded.snapshots.values():
                shutil.rmtree(self.snapshots.pop(sid), ignore_errors=True)
                log.info("pg.snapshot_deleted", snapshot=sid)
        for vol in view.volumes.values():
            if vol.id not in self.clusters and vol.snapshot_id in self.snapshots:
                dest = self.root / "volumes" / vol.id
                copy = PgCluster(self.snapshots[vol.snapshot_id], 0).snapshot_to(dest)
                copy.port = self._port()
                self.clusters[vol.id] = copy
                log.info("pg.volume_from_snapshot", volume=vol.id, snapshot=vol.snapshot_id)

    def _take_snapshot(self, sid: str, vid: str) -> None:
        dest = self.root / "snapshots" / sid
        self.clusters[vid].snapshot_to(dest)
        self.snapshots[sid] = dest
        log.info("pg.snapshot", snapshot=sid, volume=vid)

    def run_volume(self, vid: str) -> None:
        """Start the server on a volume's data (blocking), on another port if its own
        was taken."""
        cluster = self.clusters[vid]
        if cluster.running():
            return
        try:
            cluster.start()
        except PgError as err:
            # Another process on this busy machine took the port meanwhile: take another
            # (a replica of this volume loses its primary; a new volume has none).
            if "TCP/IP socket" not in str(err) and "already in use" not in str(err):
                raise
            log.warning("pg.port_taken", volume=vid, port=cluster.port)
            cluster.port = self._port()
            cluster.start()
        log.info("pg.start", volume=vid, port=cluster.port)

    def _crash(self, vid: str) -> None:
        cluster = self.clusters[vid]
        written = {self.writer.target_port, self.writer.last_port} if self.writer else set()
        cluster.stop("immediate")
        if cluster.port in written and self.primary_lost_at is None:
            self.primary_lost_at = time.time()
        log.info("pg.stop", volume=vid, port=cluster.port)

    # --- faults ------------------------------------------------------------------------------

    def corrupt(self, kind: str, ident: str) -> None:
        """Flip bytes in the probe table's first page of a volume's or a snapshot's data,
        on disk (called again, it flips them back). A running server sees it when it next
        reads that page from disk: after a restart, as with real latent corruption."""
        if kind == "snapshot":
            path = self.snapshots.get(ident)
            if path is None:
                raise PgError(f"snapshot {ident} holds no database copy")
            corrupt_file_page(path / self.probe_file)
            return
        cluster = self.clusters.get(ident)
        if cluster is None:
            raise PgError(f"volume {ident} holds no database")
        if cluster.running():
            cluster.sql("CHECKPOINT", timeout_s=30)
        corrupt_file_page(cluster.data_dir / self.probe_file)

    def lag(self, instance_id: str, delay_s: str) -> None:
        """Hold the replica's replay `delay_s` seconds behind its primary (0: catch up)."""
        vid = self._volume_of(instance_id, self._view)
        if vid is None:
            raise PgError(f"{instance_id} has no database")
        cluster = self.clusters[vid]
        millis = int(float(delay_s) * 1000)
        if millis and not cluster.in_recovery():
            raise PgError(f"{instance_id} is not a replica: nothing to lag")
        value = f"'{millis}ms'" if millis else "DEFAULT"
        cluster.sql(f"ALTER SYSTEM SET recovery_min_apply_delay = {value}")
        cluster.sql("SELECT pg_reload_conf()")

    def dump_port(self, host: SimHost) -> int | None:
        """The port of the server on the host's volume, while it runs (pg_dump's, and the
        sandbox freeze's CHECKPOINT's)."""
        vid = self._host_volume(host)
        cluster = self.clusters.get(vid) if vid else None
        return cluster.port if cluster is not None and cluster.running() else None

    # --- what the hosts' agents report ------------------------------------------------------

    async def _refresh_forever(self) -> None:
        while True:
            for vid, cluster in list(self.clusters.items()):
                if cluster.running():
                    self.facts[vid] = await asyncio.to_thread(read_facts, cluster)
            await asyncio.sleep(REFRESH_S)

    def _host_volume(self, host: SimHost) -> str | None:
        return self._volume_of(host.instance_id, self._view)

    def check_result(self, host: SimHost) -> CheckResult:
        vid = self._host_volume(host)
        facts = self.facts.get(vid) if vid else None
        if facts is None or facts.error is not None:
            reason = facts.error if facts else "no database on this host"
            return CheckResult(
                name="database", kind="database", status=Status.UNKNOWN,
                detail=f"postgres: {reason}", data={"source": "postgres"},
            )  # fmt: skip
        status = Status.CRITICAL if facts.corrupt else Status.OK
        detail = (
            f"data corrupt: {facts.probe_error or f'{facts.checksum_failures} checksum failures'}"
            if facts.corrupt
            else f"{facts.role}, integrity ok, lag {facts.lag_s:g}s"
        )
        return CheckResult(
            name="database",
            kind="database",
            status=status,
            detail=detail,
            data={
                "role": facts.role,
                "lag_s": facts.lag_s,
                "lag_bytes": facts.lag_bytes,
                "integrity": "corrupt" if facts.corrupt else "ok",
                "checksum_failures": facts.checksum_failures,
                "timeline": facts.timeline,
                "system_identifier": facts.system_identifier,
                "source": "postgres",
                "checked_at": facts.at,
            },
        )

    def promote(self, host: SimHost) -> str | None:
        """Promote the host's server (blocking); its previous role."""
        vid = self._host_volume(host)
        if vid is None:
            raise PgError(f"{host.name} has no database")
        previous = self.clusters[vid].promote()
        self.facts[vid] = read_facts(self.clusters[vid])
        return previous

    def describe(self) -> dict[str, str]:
        """Each data volume (by Name when it has one) and its server's address."""
        names = {v.id: v.name for v in self._view.volumes.values()}
        return {names.get(vid) or vid: c.address for vid, c in self.clusters.items()}

    async def data_facts(self) -> DataFacts | None:
        """The writer's tally and the rows the service's database holds now."""
        if self.writer is None:
            return None
        tally = self.writer.tally
        port = self._target()
        surviving: frozenset[int] | None = None
        error = ""
        if port is None:
            error = "the database the app servers are told was not running at the end"
        else:
            try:
                out = await asyncio.to_thread(
                    PgCluster(self.root, port).sql, READ_BACK, timeout_s=30
                )
                surviving = frozenset(int(x) for x in out.split())
            except (PgError, ValueError) as err:
                error = f"reading the rows back failed: {err}"
        return DataFacts(
            tally.attempted, dict(tally.acked), surviving, self.primary_lost_at, error,
            tally.first_at,
        )  # fmt: skip

    # --- the writer's target -----------------------------------------------------------------

    def _writer_port(self, instance_id: str | None) -> int | None:
        """The port of the server on `instance_id`'s volume, when it runs."""
        vid = self._volume_of(instance_id, self._view) if instance_id else None
        cluster = self.clusters.get(vid) if vid else None
        return cluster.port if cluster is not None and cluster.running() else None
