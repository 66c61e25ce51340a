"""The last discovered fleet, kept in the state directory across restarts.

Discovery keeps watching a region's last known instances while that region's API fails
(`discover(previous=...)`). Without this file a restart forgets them: drwatch restarted
during a region outage (say, killed in the middle of a region failover) would no longer
know that region's instances at all, call itself blind, and end nothing. Written on every
change of the fleet (atomically: a temporary file, then a rename); a file that cannot be
read is an empty fleet, never an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from drwatch.model.fleet import Fleet, Instance, InstanceState, Role

FLEET_FILE = "fleet.json"


def save_fleet(path: Path, fleet: Fleet) -> None:
    doc = {"discovered_at": fleet.discovered_at, "instances": [_doc(i) for i in fleet]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


def load_fleet(path: Path) -> Fleet:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        instances = tuple(_instance(raw) for raw in doc["instances"])
        return Fleet(instances=instances, discovered_at=float(doc["discovered_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Fleet()


def _doc(i: Instance) -> dict[str, Any]:
    return {
        "id": i.id,
        "name": i.name,
        "region": i.region,
        "zone": i.zone,
        "role": i.role.value,
        "group": i.group,
        "state": i.state.value,
        "private_ip": i.private_ip,
        "public_ip": i.public_ip,
        "image_id": i.image_id,
        "volumes": list(i.volumes),
        "tags": [list(t) for t in i.tags],
        "launched_at": i.launched_at,
    }


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        id=str(raw["id"]),
        name=str(raw["name"]),
        region=str(raw["region"]),
        zone=str(raw["zone"]),
        role=Role(raw["role"]),
        group=str(raw["group"]),
        state=InstanceState(raw["state"]),
        private_ip=raw.get("private_ip"),
        public_ip=raw.get("public_ip"),
        image_id=raw.get("image_id"),
        volumes=tuple(str(v) for v in raw.get("volumes", ())),
        tags=tuple((str(k), str(v)) for k, v in raw.get("tags", ())),
        launched_at=raw.get("launched_at"),
    )
