"""A machine image as the readiness rules see it: its id and its tags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ImageRef:
    id: str
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
