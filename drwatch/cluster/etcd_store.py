"""The seam's several-watcher side: the journal and the controls in etcd.

Every journal write is one etcd transaction whose first condition is the leader's fence
(the leader key still has the create revision this leader won): a deposed leader's write
is refused by etcd itself, however late it arrives, and raises NotLeaderError. Updates
of an existing row also compare its mod revision with the one read, so two writers can
never interleave a read-modify-write. The operator's controls are not fenced: any
watcher may record a pause or an approval for the leader to act on.

Keys, under /<namespace>/ (JSON values; names percent-quoted):
  journal/runs/<run>                 journal/steps/<run>/<step>
  journal/effects/<run>/<step>/<key> controls/pause, controls/approvals/<incident>
  views/<watcher>                    (under the watcher's lease)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from drwatch.act.journal import (
    EFFECT_DONE,
    EFFECT_INTENT,
    JSON,
    RUN_RUNNING,
    STEP_INTENT,
    EffectRow,
    RunRow,
    StepRow,
    plan_from_json,
    plan_to_json,
)
from drwatch.cluster.errors import JournalConflictError, NoLeaseError, NotLeaderError
from drwatch.cluster.etcd import Compare, Etcd, KeyValue, Put
from drwatch.cluster.leader import Fence
from drwatch.cluster.store import Approval, PauseState
from drwatch.cluster.vantage import View
from drwatch.model.plan import Plan, PlaybookName


def _q(part: str) -> str:
    return quote(part, safe="")


def _absent(key: str) -> Compare:
    return Compare(key, "version", "==", 0)


class EtcdJournalStore:
    """`JournalStore` in etcd. `fence()` gives the leader's token or raises NotLeaderError."""

    def __init__(self, etcd: Etcd, namespace: str, fence: Callable[[], Fence]) -> None:
        self._etcd = etcd
        self._fence = fence
        self._root = f"/{namespace}/journal"

    def _run_key(self, run_id: str) -> str:
        return f"{self._root}/runs/{_q(run_id)}"

    def _step_key(self, run_id: str, name: str = "") -> str:
        return f"{self._root}/steps/{_q(run_id)}/{_q(name) if name else ''}"

    def _effect_key(self, run_id: str, step: str = "", key: str = "") -> str:
        tail = f"{_q(step)}/{_q(key)}" if step else ""
        return f"{self._root}/effects/{_q(run_id)}/{tail}"

    async def _write(self, key: str, body: dict[str, Any], cond: Compare) -> None:
        """Put `body` at `key` if this watcher still leads and `cond` holds."""
        fence = self._fence()
        value = json.dumps(body, sort_keys=True).encode()
        if await self._etcd.txn([fence.holds(), cond], [Put(key, value)]):
            return
        current = await self._etcd.get(fence.key)
        if current is None or current.create_revision != fence.revision:
            raise NotLeaderError(
                f"deposed: the leader key is no longer revision {fence.revision}; "
                f"refused to journal {key}"
            )
        raise JournalConflictError(f"{key} changed or already exists")

    async def _update(self, key: str, change: dict[str, Any]) -> None:
        """Merge `change` into the row at `key`; nothing if it does not exist."""
        kv = await self._etcd.get(key)
        if kv is None:
            return
        body = {**json.loads(kv.value), **change}
        await self._write(key, body, Compare(key, "mod", "==", kv.mod_revision))

    # -- runs ----------------------------------------------------------------------------------

    async def start_run(self, run_id: str, plan: Plan, owner: str, now: float) -> None:
        key = self._run_key(run_id)
        body = {
            "run_id": run_id,
            "incident_id": plan.incident_id,
            "playbook": plan.playbook.value,
            "plan": plan_to_json(plan),
            "owner": owner,
            "status": RUN_RUNNING,
            "detail": "",
            "started_at": now,
            "ended_at": None,
            "updated_at": now,
        }
        await self._write(key, body, _absent(key))

    async def take_over(self, run_id: str, owner: str, now: float) -> None:
        await self._update(self._run_key(run_id), {"owner": owner, "updated_at": now})

    async def finish_run(self, run_id: str, status: str, detail: str, now: float) -> None:
        change = {"status": status, "detail": detail, "ended_at": now, "updated_at": now}
        await self._update(self._run_key(run_id), change)

    async def run(self, run_id: str) -> RunRow | None:
        kv = await self._etcd.get(self._run_key(run_id))
        return _run_row(kv) if kv is not None else None

    async def _runs(self) -> list[RunRow]:
        rows = [_run_row(kv) for kv in await self._etcd.get_prefix(f"{self._root}/runs/")]
        return sorted(rows, key=lambda r: (r.started_at, r.run_id))

    async def unfinished(self) -> list[RunRow]:
        return [r for r in await self._runs() if r.status == RUN_RUNNING]

    async def recent(self, limit: int = 500) -> list[RunRow]:
        return (await self._runs())[-limit:] if limit > 0 else []

    # -- steps ---------------------------------------------------------------------------------

    async def step_intent(self, run_id: str, name: str, owner: str, now: float) -> None:
        """Re-entering a step after a crash keeps its first start time and its place."""
        key = self._step_key(run_id, name)
        kv = await self._etcd.get(key)
        if kv is not None:
            body = {**json.loads(kv.value), "owner": owner}
            await self._write(key, body, Compare(key, "mod", "==", kv.mod_revision))
            return
        seq = len(await self._etcd.get_prefix(self._step_key(run_id)))
        body = {
            "run_id": run_id,
            "seq": seq,
            "name": name,
            "status": STEP_INTENT,
            "detail": "",
            "result": {},
            "owner": owner,
            "started_at": now,
            "ended_at": None,
        }
        await self._write(key, body, _absent(key))

    async def step_end(
        self,
        run_id: str,
        name: str,
        status: str,
        *,
        detail: str,
        result: JSON,
        owner: str,
        now: float,
    ) -> None:
        change = {
            "status": status,
            "detail": detail,
            "result": result,
            "owner": owner,
            "ended_at": now,
        }
        await self._update(self._step_key(run_id, name), change)

    async def steps(self, run_id: str) -> list[StepRow]:
        bodies = [
            json.loads(kv.value) for kv in await self._etcd.get_prefix(self._step_key(run_id))
        ]
        bodies.sort(key=lambda b: b["seq"])
        return [
            StepRow(
                b["run_id"],
                b["name"],
                b["status"],
                b["detail"],
                b["result"],
                b["owner"],
                b["started_at"],
                b["ended_at"],
            )
            for b in bodies
        ]

    # -- effects -------------------------------------------------------------------------------

    async def effect(self, run_id: str, step: str, key: str) -> EffectRow | None:
        kv = await self._etcd.get(self._effect_key(run_id, step, key))
        if kv is None:
            return None
        b = json.loads(kv.value)
        return EffectRow(
            b["run_id"], b["step"], b["key"], b["status"], b["params"], b["result"], b["owner"]
        )

    async def effect_intent(
        self, run_id: str, step: str, key: str, *, params: JSON, owner: str, now: float
    ) -> None:
        """Committed in etcd, under the fence, before the side effect is made."""
        k = self._effect_key(run_id, step, key)
        body = {
            "run_id": run_id,
            "step": step,
            "key": key,
            "status": EFFECT_INTENT,
            "params": params,
            "result": None,
            "owner": owner,
            "intent_at": now,
            "done_at": None,
        }
        await self._write(k, body, _absent(k))

    async def effect_done(
        self, run_id: str, step: str, key: str, *, result: JSON, owner: str, now: float
    ) -> None:
        change = {"status": EFFECT_DONE, "result": result, "owner": owner, "done_at": now}
        await self._update(self._effect_key(run_id, step, key), change)

    async def has_effects(self, run_id: str) -> bool:
        return bool(await self._etcd.get_prefix(self._effect_key(run_id)))

    def close(self) -> None:
        return None  # the etcd client belongs to the daemon's `Shared`


class EtcdControlStore:
    """`ControlStore` in etcd: any watcher writes; the first approval stands."""

    def __init__(self, etcd: Etcd, namespace: str) -> None:
        self._etcd = etcd
        self._pause = f"/{namespace}/controls/pause"
        self._approvals = f"/{namespace}/controls/approvals/"

    async def pause_state(self) -> PauseState:
        kv = await self._etcd.get(self._pause)
        if kv is None:
            return PauseState(False, "")
        d = json.loads(kv.value)
        return PauseState(bool(d["paused"]), str(d["note"]) if d["paused"] else "")

    async def set_pause(self, paused: bool, note: str) -> None:
        body = {"paused": paused, "note": note if paused else ""}
        await self._etcd.put(self._pause, json.dumps(body).encode())

    async def approve(self, incident_id: str, by: str, at: float) -> Approval:
        key = self._approvals + _q(incident_id)
        value = json.dumps({"by": by, "at": at}).encode()
        if await self._etcd.txn([_absent(key)], [Put(key, value)]):
            return Approval(incident_id, by, at)
        existing = await self.approval(incident_id)
        return existing if existing is not None else Approval(incident_id, by, at)

    async def approval(self, incident_id: str) -> Approval | None:
        kv = await self._etcd.get(self._approvals + _q(incident_id))
        if kv is None:
            return None
        d = json.loads(kv.value)
        return Approval(incident_id, str(d["by"]), float(d["at"]))


class ViewBoard:
    """Every watcher's latest view, at views/<watcher> under that watcher's own lease: a
    watcher that dies takes its view with it when its lease expires."""

    def __init__(self, etcd: Etcd, namespace: str) -> None:
        self._etcd = etcd
        self._root = f"/{namespace}/views/"

    async def publish(self, view: View, lease: int) -> None:
        if not lease:
            raise NoLeaseError(f"{view.watcher} holds no lease: its view would outlive it")
        await self._etcd.put(self._root + _q(view.watcher), view.to_json(), lease)

    async def views(self) -> list[View]:
        return [View.from_json(kv.value) for kv in await self._etcd.get_prefix(self._root)]


def _run_row(kv: KeyValue) -> RunRow:
    b = json.loads(kv.value)
    return RunRow(
        run_id=b["run_id"],
        incident_id=b["incident_id"],
        playbook=PlaybookName(b["playbook"]),
        plan=plan_from_json(b["plan"]),
        owner=b["owner"],
        status=b["status"],
        detail=b["detail"],
        started_at=b["started_at"],
        ended_at=b["ended_at"],
    )
