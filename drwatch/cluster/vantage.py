"""Vantage corroboration: is a target or zone down, judged from every watcher's view?

Pure: views and provider facts in, a verdict out; `now` is passed in.

Each watcher publishes a compact view (what it saw of each target, and when). Silence
(timeouts, refused connections) is a fact about the path as much as the target, so:

- what the provider asserts (stopped, terminated, impaired; a zone impaired) is down
  with no quorum;
- a target is down by silence only when at least `quorum` fresh views see it silent and
  no fresh view reaches it (a target one watcher reaches is alive: the others' paths
  are the problem);
- a zone is down by silence likewise, counting per view whether most of the zone's
  targets are silent; the watchers that see it silent while another reaches it are
  *cut* from that zone: their own state, not an outage. A zone silent from one vantage
  point only is an alert, never an action, unless the provider corroborates.

A view older than `max_age` says nothing of now and is left out (unknown is not down).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Seen(StrEnum):
    UP = "u"  # some layer answered
    SILENT = "s"  # every layer tried timed out or was refused
    UNKNOWN = "?"  # not checked yet, or the check itself could not run


class Basis(StrEnum):
    PROVIDER = "provider"  # the provider asserts it: no quorum needed
    QUORUM = "quorum"  # enough fresh views see it silent, none reaches it
    REACHED = "reached"  # some fresh view reaches it: not down
    TOO_FEW = "too_few"  # silent from fewer fresh views than the quorum


@dataclass(frozen=True, slots=True)
class View:
    """One watcher's view, as published under its own lease."""

    watcher: str
    at: float
    targets: Mapping[str, Seen] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body = {
            "w": self.watcher,
            "at": self.at,
            "t": {k: v.value for k, v in self.targets.items()},
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> View:
        d = json.loads(raw)
        return cls(str(d["w"]), float(d["at"]), {k: Seen(v) for k, v in d["t"].items()})


@dataclass(frozen=True, slots=True)
class Verdict:
    down: bool
    basis: Basis
    # Acting on it is allowed: not a zone silent from a single vantage point.
    actionable: bool
    silent_from: tuple[str, ...] = ()
    reached_from: tuple[str, ...] = ()
    # Watchers that see it silent while another reaches it: their path is cut.
    cut: tuple[str, ...] = ()
    reason: str = ""


def fresh(views: Sequence[View], now: float, max_age: float) -> list[View]:
    return sorted((v for v in views if now - v.at <= max_age), key=lambda v: v.watcher)


def judge_target(
    target: str,
    views: Sequence[View],
    *,
    now: float,
    max_age: float,
    quorum: int,
    provider_says_down: str | None = None,
) -> Verdict:
    """Down if the provider says so (its words in `provider_says_down`), or by quorum."""
    if provider_says_down:
        return Verdict(True, Basis.PROVIDER, True, reason=f"provider: {provider_says_down}")
    current = fresh(views, now, max_age)
    silent = tuple(v.watcher for v in current if v.targets.get(target) is Seen.SILENT)
    reached = tuple(v.watcher for v in current if v.targets.get(target) is Seen.UP)
    return _by_quorum(target, silent, reached, n_fresh=len(current), quorum=quorum, min_watchers=1)


def judge_zone(
    zone_targets: Sequence[str],
    views: Sequence[View],
    *,
    now: float,
    max_age: float,
    quorum: int,
    share: float,
    provider_says_impaired: str | None = None,
) -> Verdict:
    """A view sees the zone silent when at least `share` of the zone's targets it has
    seen are silent, and reaches it otherwise; a view that saw none of them abstains."""
    if provider_says_impaired:
        return Verdict(True, Basis.PROVIDER, True, reason=f"provider: {provider_says_impaired}")
    current = fresh(views, now, max_age)
    silent: list[str] = []
    reached: list[str] = []
    for v in current:
        known = [s for t in zone_targets if (s := v.targets.get(t, Seen.UNKNOWN)) != Seen.UNKNOWN]
        if not known:
            continue
        silent_share = sum(s is Seen.SILENT for s in known) / len(known)
        (silent if silent_share >= share else reached).append(v.watcher)
    return _by_quorum(
        "the zone",
        tuple(silent),
        tuple(reached),
        n_fresh=len(current),
        quorum=quorum,
        min_watchers=2,
    )


def _by_quorum(
    what: str,
    silent: tuple[str, ...],
    reached: tuple[str, ...],
    *,
    n_fresh: int,
    quorum: int,
    min_watchers: int,
) -> Verdict:
    if reached:
        cut = silent
        why = f"{what} answers {', '.join(reached)}"
        if cut:
            why += f"; silent only from {', '.join(cut)} (their path is cut)"
        return Verdict(False, Basis.REACHED, False, silent, reached, cut, why)
    if len(silent) < quorum:
        why = f"silent from {len(silent)} of {n_fresh} fresh views (quorum {quorum})"
        return Verdict(False, Basis.TOO_FEW, False, silent, reason=why)
    actionable = len(silent) >= min_watchers
    why = f"silent from {', '.join(silent)} ({len(silent)} of {n_fresh} fresh, quorum {quorum})"
    if not actionable:
        why += ": one vantage point only, an alert until the provider corroborates"
    return Verdict(True, Basis.QUORUM, actionable, silent, reason=why)
