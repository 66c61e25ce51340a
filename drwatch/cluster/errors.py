"""The cluster's errors: every aetcd/gRPC error becomes one of these in `etcd.py`."""

from __future__ import annotations

from drwatch.errors import DrwatchError


class EtcdUnavailableError(DrwatchError):
    """etcd did not answer within the deadline, refused the connection, or has no quorum."""


class EtcdRefusedError(DrwatchError):
    """etcd answered but refused the request (authentication, permissions, bad argument)."""


class NotLeaderError(DrwatchError):
    """A write that only the leader may make was refused: this watcher does not lead now,
    or etcd's leader key is no longer the one it won (it was deposed: fencing)."""


class TickNotSharedError(DrwatchError):
    """A leader's tick could not write its incident changes to etcd (deposed, or etcd out
    of reach): nothing of it was written locally and no plan was submitted."""


class JournalConflictError(DrwatchError):
    """The row to create is already journaled (a run, or an effect's intent): the caller
    must read it and resume, not write it again."""


class NoLeaseError(DrwatchError):
    """This watcher holds no lease now (etcd unreachable): what it would publish under
    its lease (its view) cannot be published."""
