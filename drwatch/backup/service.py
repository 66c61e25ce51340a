"""Backups as the daemon holds them: built from `[backup]`, scheduled, and reported.

`open_service` is the composition step (the daemon's root calls it): it checks the
recipient key (a missing gpg or a wrong key stops the start, with the reason), opens a
store per location, resumes interrupted runs, and starts one job per class and kind
that has a source, plus the re-verification job. `BackupService.doc(now)` is what
`GET /api/v1/backups` returns, and `findings(now)` what the status shows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from drwatch.backup.catalogue import Catalogue, Entry, SqliteCatalogue
from drwatch.backup.cluster import BackupLeader, BackupSharing, FencedStore
from drwatch.backup.config import KINDS, BackupConfig, ClassKind, DataClass, LocationName
from drwatch.backup.gpg import Recipient, check_private_key
from drwatch.backup.jobs import BackupScheduler, Job
from drwatch.backup.ladder import LadderCatalogue, unrestorable
from drwatch.backup.metrics import BackupMetrics
from drwatch.backup.pipeline import Pipeline
from drwatch.backup.restore_schedule import (
    RestoreResult,
    RestoreTestLog,
    ScheduledRestoreTest,
    manifest_restorer,
)
from drwatch.backup.retention import to_prune
from drwatch.backup.rpo import (
    Diagnosis,
    Objective,
    Status,
    compliance,
    findings,
    image_copies_pending,
)
from drwatch.backup.runner import BackupRunner, Place, Produce
from drwatch.backup.source import Source
from drwatch.backup.store import ObjectStore, S3Store

# Makes the plaintext stream for one run of a class (a dump, an archive).
SourceFactory = Callable[[str, DataClass], Awaitable[Source]]
# Runs one kind of backup of a class where its data lives (drwatch.backup.fleet): the
# entries it recorded through the service (run_remote, record).
Producer = Callable[["BackupService", str, DataClass], Awaitable[list[Entry]]]
Clock = Callable[[], float]
RECENT = 200
STAGGER_S = 2.0


class BackupService:
    """The catalogue, the RPO of every class at every location, and the runs."""

    def __init__(
        self,
        cfg: BackupConfig,
        rpo_of: Mapping[str, float],
        catalogue: Catalogue,
        *,
        since: float,
        runner: BackupRunner | None = None,
        metrics: BackupMetrics | None = None,
        restore_test: ScheduledRestoreTest | None = None,
    ) -> None:
        self.cfg = cfg
        self._rpo_of = dict(rpo_of)
        self.catalogue = catalogue
        self.runner = runner
        self._since = since
        self._metrics = metrics or BackupMetrics(None)
        self.restore_test = restore_test
        # The database ladder's view (rungs 4 to 6); set by open_service, which has the stores.
        self.ladder: LadderCatalogue | None = None
        # Several watchers (drwatch.backup.cluster): the shared copies, and what runs the
        # jobs only while this watcher leads; None for one watcher.
        self.sharing: BackupSharing | None = None
        self.leader: BackupLeader | None = None

    def objectives(self, entries: list[Entry] | None = None) -> list[Objective]:
        """Classes that are backed up, each at every configured location. A class is
        watched since its oldest catalogue entry when that is older than this start:
        a restart does not reset the clock of a class whose backups never verified."""
        known = self.catalogue.entries() if entries is None else entries
        first: dict[str, float] = {}
        for e in known:
            first[e.data_class] = min(first.get(e.data_class, e.created_at), e.created_at)
        locations = tuple(self.cfg.locations.configured())
        # Images live in regions: the fixed class has no off-site copy.
        regional = tuple(n for n in locations if n != LocationName.OFFSITE)
        return [
            Objective(
                name,
                self._rpo_of[name],
                regional if dc.kind is ClassKind.FIXED else locations,
                min(self._since, first.get(name, self._since)),
            )
            for name, dc in self.cfg.classes.items()
            if dc.kind is not ClassKind.TRANSIENT
        ]

    def statuses(self, now: float) -> list[Status]:
        entries = self.catalogue.entries()
        return compliance(entries, self.objectives(entries), now, self.cfg.failing_after)

    def findings(self, now: float) -> list[Diagnosis]:
        return self._findings(self.statuses(now), now)

    def _findings(self, statuses: list[Status], now: float) -> list[Diagnosis]:
        """RPO and failing runs, backups the ladder found bad, an overdue restore test.
        None from a watcher that has not read the shared catalogue yet: it has no
        backups of its own to judge by."""
        if self.sharing is not None and not self.sharing.ready:
            return []
        tested = self.restore_test.findings(now) if self.restore_test else []
        entries = self.catalogue.entries()
        copies = image_copies_pending(entries, now)
        return findings(statuses) + unrestorable(entries, now) + tested + copies

    async def run_restore_test(self, clock: Clock) -> list[RestoreResult]:
        """One round of the scheduled restore test (drwatch.backup.restore_schedule)."""
        if self.restore_test is None:
            return []
        results = await self.restore_test.run(clock)
        self._metrics.record_restore_tests(results)
        return results

    async def run(self, data_class: str, kind: str, make: SourceFactory) -> list[Entry]:
        """One run of a class and kind, start to end, then the metrics."""
        assert self.runner is not None, "a read-only service has no runner"
        started = time.monotonic()
        try:
            source = await make(data_class, self.cfg.classes[data_class])
        except Exception as err:
            entries = self.runner.failed_to_start(data_class, kind, f"no source: {err}")
        else:
            entries = await self.runner.run_stream(data_class, kind, source)
        self._metrics.record_run(entries, time.monotonic() - started)
        self.refresh_metrics()
        return entries

    async def run_remote(self, data_class: str, kind: str, produce: Produce) -> list[Entry]:
        """One backup another host makes (see BackupRunner.run_remote), then the metrics."""
        assert self.runner is not None, "a read-only service has no runner"
        started = time.monotonic()
        entries = await self.runner.run_remote(data_class, kind, produce)
        self._metrics.record_run(entries, time.monotonic() - started)
        self.refresh_metrics()
        return entries

    def failed(self, data_class: str, kind: str, why: str) -> list[Entry]:
        """A run that could not start (no host to take it from): failed everywhere."""
        assert self.runner is not None, "a read-only service has no runner"
        entries = self.runner.failed_to_start(data_class, kind, why)
        self._metrics.record_run(entries, 0.0)
        self.refresh_metrics()
        return entries

    def record(self, entries: list[Entry], duration: float) -> list[Entry]:
        """Entries a producer checked itself (volume snapshots, images)."""
        assert self.runner is not None, "a read-only service has no runner"
        self.runner.record_external(entries)
        self._metrics.record_run(entries, duration)
        self.refresh_metrics()
        return entries

    def runner_hook(self, delete_external: Callable[[Entry], Awaitable[None]]) -> None:
        """How retention deletes what an external entry names (a snapshot)."""
        if self.runner is not None:
            self.runner.delete_external = delete_external

    async def reverify(self, now: float) -> list[Entry]:
        assert self.runner is not None, "a read-only service has no runner"
        changed = await self.runner.reverify(
            older_than=now - self.cfg.reverify_every, recent=self._rpo_of
        )
        self.refresh_metrics()
        return changed

    async def prune(self, now: float) -> list[Entry]:
        """Apply each location's retention (never the newest verified backup)."""
        assert self.runner is not None, "a read-only service has no runner"
        rules = {n.value: loc.retention for n, loc in self.cfg.locations.configured().items()}
        return await self.runner.prune(to_prune(self.catalogue.entries(), rules, now))

    def export_rpo(self) -> None:
        self._metrics.set_rpo({o.data_class: o.rpo for o in self.objectives()})

    def export_restore_tests(self) -> None:
        if self.restore_test is not None and self.restore_test.enabled:
            self._metrics.start_restore_tests(
                self.restore_test.last_ok(), self.cfg.restore_test.max_age
            )

    def refresh_metrics(self) -> None:
        self._metrics.update(self.catalogue.entries())

    def jobs(
        self,
        sources: Mapping[str, SourceFactory],
        clock: Clock,
        producers: Mapping[str, Producer] | None = None,
    ) -> list[Job]:
        """One job per class and kind that has a producer (or a local source), and the
        re-verification job (which applies retention after it)."""
        out = []
        for name, dc in self.cfg.classes.items():
            for kind, every in dc.intervals(self._rpo_of[name]).items():
                producer = (producers or {}).get(kind)
                make = sources.get(kind)
                if producer is not None:
                    out.append(Job(name, kind, every, _bind_producer(self, name, producer)))
                elif make is not None:
                    out.append(Job(name, kind, every, _bind(self, name, kind, make)))
        every = self.cfg.reverify_every

        async def reverify() -> None:
            await self.reverify(clock())
            await self.prune(clock())

        out.append(Job("all", "reverify", every, reverify))
        if self.restore_test is not None and self.restore_test.enabled:

            async def restore_test() -> None:
                await self.run_restore_test(clock)

            out.append(Job("all", "restore_test", self.cfg.restore_test.every, restore_test))
        return out

    def status_part(self, now: float) -> dict[str, Any]:
        """What GET /api/v1/status shows of backups: each class at each location, and
        the findings in the status document's shape (`data_class`, `location` and `age_s`
        in `facts`; `targets` empty: a finding about data, not about instances)."""
        statuses = self.statuses(now)
        return {
            "backups": {
                "classes": [s.to_dict() for s in statuses],
                "not_backed_up": [
                    n for n, dc in self.cfg.classes.items() if dc.kind is ClassKind.TRANSIENT
                ],
                "watcher_holds_private_key": self.cfg.watcher_private_key_file is not None,
                "restore_test": self.restore_test.status(now) if self.restore_test else None,
                "sharing": self.sharing.status() if self.sharing else None,
            },
            "findings": [_finding_doc(d) for d in self._findings(statuses, now)],
        }

    def doc(self, now: float) -> dict[str, Any]:
        """GET /api/v1/backups: each class's RPO status per location, recent backups, findings."""
        statuses = self.statuses(now)
        by_class: dict[str, list[Status]] = {}
        for s in statuses:
            by_class.setdefault(s.data_class, []).append(s)
        classes = [
            {
                "data_class": name,
                "class_kind": dc.kind.value,
                "kinds": [k.value for k in KINDS[dc.kind]],
                "groups": dc.groups,
                "rpo_s": self._rpo_of[name],
                "backed_up": dc.kind is not ClassKind.TRANSIENT,
                "locations": [s.to_dict() for s in by_class.get(name, [])],
            }
            for name, dc in self.cfg.classes.items()
        ]
        return {
            "now": now,
            "recipient_fingerprint": self.cfg.recipient.fingerprint if self.cfg.recipient else None,
            "custody": self.cfg.custody,
            "watcher_holds_private_key": self.cfg.watcher_private_key_file is not None,
            "classes": classes,
            "findings": [
                {
                    "finding": d.finding.value,
                    "data_class": d.data_class,
                    "location": d.location,
                    "age_s": d.age,
                    "message": d.message,
                    "severity": SEVERITY[d.finding.value],
                    **dict(d.facts),
                }
                for d in self._findings(statuses, now)
            ],
            "restore_test": self.restore_test.status(now) if self.restore_test else None,
            "sharing": self.sharing.status() if self.sharing else None,
            "backups": [e.to_dict() for e in self.catalogue.entries()[:RECENT]],
        }


SEVERITY = {
    "backup_rpo_breached": "alert",
    "backup_failing": "warning",
    "backup_unrestorable": "alert",
    "backup_restore_test_overdue": "warning",
    "image_copy_pending": "warning",
}


def _finding_doc(d: Diagnosis) -> dict[str, Any]:
    age = "" if d.age is None else f"{d.age:.0f}"
    extra = dict(d.facts)
    key = f"{d.data_class}@{d.location}" + (f"/{extra['image']}" if "image" in extra else "")
    return {
        "finding": d.finding.value,
        "description": d.finding.description,
        "severity": SEVERITY[d.finding.value],
        "scope": "data",
        "scope_key": key,
        "data_class": d.data_class,
        "location": d.location,
        "age_s": d.age,
        "targets": [],
        "target_ids": [],
        "evidence": d.message,
        "facts": {"data_class": d.data_class, "location": d.location, "age_s": age, **extra},
    }


def _bind(
    service: BackupService, data_class: str, kind: str, make: SourceFactory
) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return await service.run(data_class, kind, make)

    return run


def _bind_producer(
    service: BackupService, data_class: str, producer: Producer
) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return await producer(service, data_class, service.cfg.classes[data_class])

    return run


@asynccontextmanager
async def open_service(
    cfg: BackupConfig,
    rpo_of: Mapping[str, float],
    state_dir: Path,
    *,
    sources: Mapping[str, SourceFactory],
    metrics: BackupMetrics | None = None,
    clock: Clock = time.time,
    producers: Mapping[str, Producer] | None = None,
    extra_jobs: Callable[[BackupService], list[Job]] | None = None,
    sharing: BackupSharing | None = None,
) -> AsyncIterator[BackupService]:
    """The running service (see the module doc); its jobs stop when the block ends.
    With `sharing` (several watchers), the catalogue is the shared one, every write to
    a store passes its gate, and the jobs run only while this watcher leads: the caller
    runs `service.leader.run()`."""
    if cfg.recipient is None:
        raise ValueError("backups need backup.recipient (check-config says so too)")
    recipient = await Recipient.load(
        cfg.gpg_binary,
        cfg.recipient.public_key_file,
        cfg.recipient.fingerprint,
        state_dir / "gnupg",
        now=clock(),
    )
    if cfg.watcher_private_key_file is not None:
        await check_private_key(
            recipient.gpg, cfg.watcher_private_key_file, recipient, state_dir / "gnupg"
        )
    async with AsyncExitStack() as stack:
        places = {}
        for name, loc in cfg.locations.configured().items():
            store: ObjectStore = await stack.enter_async_context(S3Store(name, loc))
            if sharing is not None:
                store = FencedStore(store, sharing.gate)
            places[name.value] = Place(store, loc.prefix)
        catalogue: Catalogue
        restore_log: RestoreTestLog
        if sharing is not None:
            catalogue, restore_log = sharing.catalogue, sharing.restore_log
            stack.callback(sharing.close)
        else:
            catalogue, restore_log = SqliteCatalogue(state_dir), RestoreTestLog(state_dir)
            stack.callback(catalogue.close)
            stack.callback(restore_log.close)
        pipeline = Pipeline(recipient, compression=cfg.compression, chunk_size=cfg.chunk_size)
        runner = BackupRunner(catalogue, places, pipeline, recipient.key_ids, clock)
        tests = ScheduledRestoreTest(
            cfg,
            catalogue,
            restore_log,
            places.get(cfg.restore_test.location.value),
            manifest_restorer(cfg),
            since=clock(),
        )
        service = BackupService(
            cfg,
            rpo_of,
            catalogue,
            since=clock(),
            runner=runner,
            metrics=metrics,
            restore_test=tests,
        )
        if sharing is None:
            await runner.resume()
        service.refresh_metrics()
        service.export_rpo()
        service.export_restore_tests()
        service.ladder = LadderCatalogue(cfg, catalogue, places, recipient.key_ids, clock)
        jobs = service.jobs(sources, clock, producers)
        if extra_jobs is not None:
            jobs += extra_jobs(service)

        def start() -> BackupScheduler:
            scheduler = BackupScheduler(jobs)
            scheduler.start(catalogue.entries(), clock(), stagger=STAGGER_S)
            return scheduler

        if sharing is None:
            stack.callback(start().shutdown)
        else:
            service.sharing = sharing
            service.leader = BackupLeader(sharing, start, runner.resume, service.refresh_metrics)
            stack.callback(service.leader.stop, "stopping")
        yield service
