"""docs/architecture.md's module table is the dependency rule: every `drwatch` import
between units (a package under drwatch/ or a top-level module) must be named in the
importing unit's "depends on" cell. Words in parentheses explain; they allow nothing.
The neutral modules (errors, units, secretfile, logs, tomlconfig, fields) may be imported
by every unit; their own row keeps them importing only each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import drwatch

ROOT = Path(drwatch.__file__).parent
DOC = ROOT.parent / "docs" / "architecture.md"
NEUTRAL = {"errors", "units", "secretfile", "logs", "tomlconfig", "fields"}


def units() -> set[str]:
    """Every unit: the packages and the top-level modules of drwatch."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    return packages | modules


def unit_of(path: Path) -> str:
    """The unit a source file belongs to."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def imported_units(path: Path) -> set[str]:
    """The other units a source file imports (absolute imports; relative ones stay home)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found.update(n.split(".")[1] for n in names if n.startswith("drwatch."))
    return found - {unit_of(path)}


def rows() -> list[tuple[str, str]]:
    """(module cell, depends-on cell) of the table at the top of the page."""
    table = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `drwatch/") and len(cells) == 3:
            table.append((cells[0], cells[2]))
    return table


def row_units(cell: str) -> set[str]:
    """The units a module cell names: `drwatch/x/`, `drwatch/x.py`, and bare `y.py` after it."""
    return {m.group(1) for m in re.finditer(r"`(?:drwatch/)?(\w+)(?:/[\w/.]*|\.py)`", cell)}


def allowed_units(cell: str, known: set[str]) -> set[str]:
    """The units a depends-on cell allows, its parenthesised explanations removed."""
    text = cell
    while (shorter := re.sub(r"\([^()]*\)", "", text)) != text:
        text = shorter
    if "everything" in text:
        return set(known)
    named = {u for u in known if re.search(rf"(?<![\w.]){u}\b", text)}
    return named | (NEUTRAL if "neutral" in text else set())


def documented() -> dict[str, set[str]]:
    """Unit -> the units it may import, from the page."""
    known = units()
    allowed: dict[str, set[str]] = {}
    for module_cell, depends in rows():
        for unit in row_units(module_cell):
            allowed[unit] = allowed.get(unit, set()) | allowed_units(depends, known) | NEUTRAL
    return allowed


def test_every_unit_has_a_row() -> None:
    """A new package or top-level module is added to the table with its dependencies."""
    assert units() - set(documented()) == set()


def test_the_rows_name_real_units() -> None:
    """No row keeps a unit that is gone."""
    assert set(documented()) - units() == set()


def test_every_import_between_units_is_documented() -> None:
    """The code imports nothing the page does not allow."""
    allowed = documented()
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {target}"
        for path in ROOT.rglob("*.py")
        for target in imported_units(path)
        if target not in allowed.get(unit_of(path), set())
    )
    assert offenders == []


def test_parenthesised_words_allow_nothing() -> None:
    """The parser itself: an explanation in parentheses is not a dependency."""
    known = {"act", "model", "config"}
    assert allowed_units("model (act is never imported)", known) == {"model"}
    assert allowed_units("everything", known) == known
    assert allowed_units("nothing", known) == set()
