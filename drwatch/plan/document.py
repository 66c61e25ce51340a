"""The plan as a small tree of blocks, so Markdown and HTML say exactly the same thing.

A `Plan` is sections; a section holds paragraphs, tables, lists and notes. A `Note`
marks a part the document cannot fill (`missing`: no data; the reason says why) or a
part that is not met (`unmet`: `drwatch plan --check` fails on these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Para:
    text: str


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Items:
    items: tuple[str, ...]
    ordered: bool = False


@dataclass(frozen=True, slots=True)
class Note:
    kind: Literal["missing", "unmet", "ok"]
    text: str


@dataclass(frozen=True, slots=True)
class Sub:
    """A subsection heading inside a section."""

    title: str


Block = Para | Table | Items | Note | Sub


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    title: str
    generated_at: float
    source: str
    sections: tuple[Section, ...] = field(default=())

    def notes(self, kind: str) -> list[tuple[str, str]]:
        """(section title, text) of every note of this kind."""
        return [
            (s.title, b.text)
            for s in self.sections
            for b in s.blocks
            if isinstance(b, Note) and b.kind == kind
        ]

    @property
    def unmet(self) -> list[tuple[str, str]]:
        return self.notes("unmet")
