"""The sandbox's control API, on loopback only: inject and heal faults, read its state.

    POST /v1/faults   {"do": VERB, "target": NAME, "delay"|"period": "2s", "percent"|"rate": 10}
    GET  /v1/state    hosts, their ports and faults, the active faults, the EIP holder

No token: it binds 127.0.0.1 and drives a simulated world only.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.cloud import SandboxError
from drwatch.sandbox.faults import HEAL, VERBS, Fault, parse_param
from drwatch.sandbox.listener import Listener
from drwatch.sandbox.world import Sandbox, free_port


def attach(sandbox: Sandbox) -> Chaos:
    """Give `sandbox` a control listener (started with it) and return its fault engine."""
    chaos = Chaos(sandbox)
    sandbox.control = Listener(free_port(), lambda: _app(sandbox, chaos))
    return chaos


def fault_from(body: dict[str, Any]) -> Fault:
    """A Fault from the control API's JSON (or a scenario event); ValueError names the problem."""
    verb, target = body.get("do"), body.get("target")
    if not isinstance(verb, str) or not verb:
        raise ValueError("missing field 'do' (the fault verb)")
    if not isinstance(target, str) or not target:
        raise ValueError("missing field 'target'")
    if verb != HEAL and verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}")
    params: dict[str, float] = {}
    if verb != HEAL:
        _, name = VERBS[verb]
        params = parse_param(verb, body.get(name)) if name else {}
    return Fault(verb=verb, target=target, params=params)


def _app(sandbox: Sandbox, chaos: Chaos) -> web.Application:
    async def faults(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            done = await chaos.do(fault_from(body))
        except (ValueError, SandboxError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"done": done})

    async def state(_request: web.Request) -> web.StreamResponse:
        return web.json_response(state_of(sandbox, chaos))

    app = web.Application()
    app.router.add_post("/v1/faults", faults)
    app.router.add_get("/v1/state", state)
    return app


def state_of(sandbox: Sandbox, chaos: Chaos) -> dict[str, Any]:
    holder = sandbox.eip_holder()
    hosts = []
    for host in sandbox.hosts.values():
        inst = sandbox.view.instances.get(host.instance_id)
        hosts.append(
            {
                "name": host.name,
                "instance_id": host.instance_id,
                "state": inst.state if inst else "gone",
                "zone": inst.zone if inst else "",
                "agent": host.agent_addr,
                "app": host.app_addr,
                "agent_listening": host.agent.running,
                "app_listening": host.app.running,
                "app_mode": host.faults.app_mode.value,
                "silenced_by": sorted(host.faults.silenced_by),
            }
        )
    return {
        **sandbox.describe_self(),
        "eip_holder": holder.name if holder else None,
        "uplink_cut": sandbox.uplink.is_shut,
        "watcher_pid": sandbox.watcher.pid,
        "faults": [
            {"do": a.fault.verb, "target": a.fault.target, "resolved": a.resolved, "at": a.at}
            for a in chaos.active
        ],
        "hosts": hosts,
    }


async def send(control_url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST a fault to a running sandbox's control API."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{control_url}/v1/faults", json=body, timeout=aiohttp.ClientTimeout(total=40)
        ) as resp,
    ):
        answer: dict[str, Any] = await resp.json()
        return resp.status, answer
