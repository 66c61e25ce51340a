"""The `[backup]` section: data classes, schedules, locations, the OpenPGP recipient.

drwatch/config.py holds it as `Config.backup` and calls `cross_problems` with the
objectives and groups it needs; this module imports only neutral ones, so the
config stays one import graph. docs/backups.md is the reference for operators.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from drwatch.fields import Duration
from drwatch.units import format_duration

Count = Annotated[int, Field(ge=1, le=100_000)]

MIB = 1024 * 1024
GIB = 1024 * MIB
# S3's limits on one object: 5 TiB at most, at most 10,000 parts of 5 MiB to 5 GiB.
S3_MAX_OBJECT = 5 * 1024 * GIB
# A chunk is one object; 1 GiB keeps parts at the 5 MiB floor and a retry cheap.
DEFAULT_CHUNK = GIB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassKind(StrEnum):
    """The four data classes of DESIGN.md, "Data protection"."""

    FIXED = "fixed"
    TRANSIENT = "transient"
    CONFIGURATION = "configuration"
    PERSISTENT = "persistent"


class BackupKind(StrEnum):
    """What one catalogue entry is (the drill contract's `kind`)."""

    CONFIG_ARCHIVE = "config_archive"
    VOLUME_SNAPSHOT = "volume_snapshot"
    DUMP = "dump"
    IMAGE = "image"


class LocationName(StrEnum):
    PRIMARY = "primary"
    STANDBY_REGION = "standby_region"
    OFFSITE = "offsite"


# Which kinds each class produces (transient: none, on purpose).
KINDS: Mapping[ClassKind, tuple[BackupKind, ...]] = {
    ClassKind.FIXED: (BackupKind.IMAGE,),
    ClassKind.TRANSIENT: (),
    ClassKind.CONFIGURATION: (BackupKind.CONFIG_ARCHIVE,),
    ClassKind.PERSISTENT: (BackupKind.VOLUME_SNAPSHOT, BackupKind.DUMP),
}

_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")


def _fingerprint(value: object) -> object:
    if isinstance(value, str):
        value = value.replace(" ", "").upper()
        if not _FINGERPRINT.match(str(value)):
            raise ValueError(
                f"{value!r} is not an OpenPGP v4 fingerprint (40 hex digits; "
                "`gpg --show-keys --with-fingerprint FILE` prints it)"
            )
    return value


Fingerprint = Annotated[str, BeforeValidator(_fingerprint)]


def _private_file(value: Path) -> Path:
    """The watcher's private key: a file only drwatch's user may read."""
    try:
        st = value.stat()
    except OSError as err:
        raise ValueError(f"{value}: cannot read: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{value}: not a regular file")
    if st.st_mode & 0o077:
        raise ValueError(
            f"{value}: private key file is readable by group or others "
            f"(mode {st.st_mode & 0o777:o}); chmod 600 it"
        )
    return value


PrivateFile = Annotated[Path, AfterValidator(_private_file)]


class Retention(_Strict):
    """How many backups of a class and kind a location keeps, and for how long.

    Pruning keeps `keep` newest and drops any older than `max_age`, but never the
    newest verified one, whatever its age."""

    keep: Count = 14
    max_age: Duration = 30 * 86400.0


class Location(_Strict):
    """One S3-compatible bucket. `endpoint` and `credentials_file` are for a provider
    other than the watched cloud (off-site); without them, the standard AWS chain."""

    bucket: str = Field(min_length=3, max_length=63)
    region: str
    endpoint: str | None = None
    # A TOML file with access_key_id and secret_access_key, mode 600.
    credentials_file: PrivateFile | None = None
    prefix: str = "drwatch"
    retention: Retention = Retention()


class Locations(_Strict):
    primary: Location
    standby_region: Location | None = None
    offsite: Location | None = None

    @model_validator(mode="after")
    def _offsite_is_another_provider(self) -> Self:
        if self.offsite is not None and self.offsite.endpoint is None:
            raise ValueError(
                "offsite.endpoint is required: the off-site copy lives at another provider"
            )
        if self.offsite is not None and self.offsite.credentials_file is None:
            raise ValueError(
                "offsite.credentials_file is required: the off-site provider has its own "
                "credentials, so the watched cloud's cannot delete its copies"
            )
        return self

    def configured(self) -> dict[LocationName, Location]:
        found = {
            LocationName.PRIMARY: self.primary,
            LocationName.STANDBY_REGION: self.standby_region,
            LocationName.OFFSITE: self.offsite,
        }
        return {name: loc for name, loc in found.items() if loc is not None}


class Recipient(_Strict):
    """The OpenPGP public key every dump and archive is encrypted to."""

    public_key_file: Path
    fingerprint: Fingerprint


class DataClass(_Strict):
    """One data class: its kind, the groups holding it, and how often each kind runs.

    An interval left out defaults from the class's RPO (DESIGN.md's table)."""

    kind: ClassKind
    groups: list[str] = Field(default_factory=list)
    snapshot_every: Duration | None = None
    dump_every: Duration | None = None
    archive_every: Duration | None = None
    # Configuration: the files and directories archived on each host of the groups.
    paths: list[str] = Field(default_factory=list)

    def intervals(self, rpo: float) -> dict[BackupKind, float]:
        """Seconds between runs of each kind this class produces."""
        if self.kind is ClassKind.PERSISTENT:
            return {
                BackupKind.VOLUME_SNAPSHOT: self.snapshot_every or rpo / 2,
                BackupKind.DUMP: self.dump_every or rpo,
            }
        if self.kind is ClassKind.CONFIGURATION:
            return {BackupKind.CONFIG_ARCHIVE: self.archive_every or min(86400.0, rpo)}
        return {}


Compression = Literal["none", "zip", "zlib", "bzip2"]


class RestoreTest(_Strict):
    """The scheduled restore test (only when the watcher holds the private key): the
    newest verified dump of every persistent class, fetched from `location`, decrypted
    and restored into a scratch PostgreSQL started from `pg_bin`. No pass within
    `max_age` is the finding `backup_restore_test_overdue`."""

    enabled: bool = True
    every: Duration = 86400.0
    max_age: Duration = 3 * 86400.0
    location: LocationName = LocationName.PRIMARY
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")

    @model_validator(mode="after")
    def _max_age_covers_a_run(self) -> Self:
        if self.every <= 0:
            raise ValueError("restore_test.every must be greater than 0")
        if self.max_age < self.every:
            raise ValueError(
                f"restore_test.max_age ({format_duration(self.max_age)}) is shorter than "
                f"restore_test.every ({format_duration(self.every)}): it would always be overdue"
            )
        return self


class BackupConfig(_Strict):
    """Backups by data class (DESIGN.md, "Data protection: backups by data class")."""

    recipient: Recipient | None = None
    # Where every copy of the private key is kept, in words; the plan prints it.
    custody: list[str] = Field(default_factory=list)
    # The watcher's own copy, for automated restore tests and the ladder's last rung.
    # It never goes to a watched host or into the cloud.
    watcher_private_key_file: PrivateFile | None = None
    # Scheduled when the watcher holds the key (above); an operator command otherwise.
    restore_test: RestoreTest = RestoreTest()
    locations: Locations
    classes: dict[str, DataClass] = Field(default_factory=dict)
    # gpg's own compression: "none" by default, because pg_dump's custom format and
    # tar.gz are compressed already and gpg's zlib costs ~10x the throughput.
    compression: Compression = "none"
    chunk_size: Annotated[int, Field(ge=5 * MIB, le=S3_MAX_OBJECT)] = DEFAULT_CHUNK
    # Verified backups are checked again this often (later damage: corrupt).
    reverify_every: Duration = 3600.0
    # This many failed runs in a row, with no verified one since, is backup_failing.
    failing_after: Count = 3
    gpg_binary: str = "gpg"


def cross_problems(
    cfg: BackupConfig, rpo_of: Mapping[str, float], group_names: Iterable[str]
) -> Iterable[str]:
    """Problems only the whole config shows. `rpo_of(name)` is the class's RPO."""
    groups = set(group_names)
    if cfg.locations.configured().get(cfg.restore_test.location) is None:
        yield (
            f"backup.restore_test.location: {cfg.restore_test.location.value} is not a "
            "configured location"
        )
    for name, dc in cfg.classes.items():
        where = f"backup.classes.{name}"
        for g in dc.groups:
            if g not in groups:
                yield f"{where}.groups: {g!r} is not a configured group"
        yield from _class_problems(cfg, where, dc, rpo_of[name])


def _class_problems(cfg: BackupConfig, where: str, dc: DataClass, rpo: float) -> Iterable[str]:
    if dc.kind is ClassKind.PERSISTENT:
        if cfg.locations.offsite is None:
            yield f"{where}: a persistent class needs backup.locations.offsite"
        if cfg.recipient is None:
            yield f"{where}: a persistent class needs backup.recipient (its dumps are encrypted)"
    if dc.kind is ClassKind.CONFIGURATION and cfg.recipient is None:
        yield f"{where}: a configuration class needs backup.recipient (archives are encrypted)"
    if dc.kind is ClassKind.CONFIGURATION and not dc.paths:
        yield f"{where}.paths: a configuration class names the paths to archive"
    fields = {
        BackupKind.VOLUME_SNAPSHOT: "snapshot_every",
        BackupKind.DUMP: "dump_every",
        BackupKind.CONFIG_ARCHIVE: "archive_every",
    }
    for kind, every in dc.intervals(rpo).items():
        if every <= 0:
            yield f"{where}.{fields[kind]} must be greater than 0"
        elif every > rpo:
            yield (
                f"{where}.{fields[kind]} ({format_duration(every)}) is looser than the class's "
                f"rpo ({format_duration(rpo)}): a backup that old already breaches it"
            )
