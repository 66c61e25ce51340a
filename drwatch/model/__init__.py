"""Frozen value types shared by every part of drwatch. Imports nothing else from drwatch."""

from drwatch.model.fleet import Fleet, Instance, InstanceState, Role
from drwatch.model.observation import Health, Layer, Observation, TargetHealth
from drwatch.model.plan import (
    Plan,
    PlaybookName,
    RunOutcome,
    RunProgress,
    Scope,
    StepRecord,
    StepStatus,
)
from drwatch.model.snapshot import Snapshot

__all__ = [
    "Fleet",
    "Health",
    "Instance",
    "InstanceState",
    "Layer",
    "Observation",
    "Plan",
    "PlaybookName",
    "Role",
    "RunOutcome",
    "RunProgress",
    "Scope",
    "Snapshot",
    "StepRecord",
    "StepStatus",
    "TargetHealth",
]
