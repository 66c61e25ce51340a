"""The agent runs on monitored servers: it must not drag the daemon in."""

from __future__ import annotations

import ast
from pathlib import Path

import drwatch.agent

# Neutral modules: each imports only other neutral modules (checked below).
NEUTRAL = (
    "drwatch.units",
    "drwatch.errors",
    "drwatch.secretfile",
    "drwatch.logs",
    "drwatch.tomlconfig",
)
# The upload side of backups: the agent encrypts and uploads a dump on its own host
# (drwatch.agent.backup), with the same pipeline the watcher uses. These import only
# each other and neutral modules (checked below), never the daemon.
UPLOAD_SIDE = tuple(
    f"drwatch.backup.{m}"
    for m in ("config", "dump", "errors", "gpg", "manifest", "pipeline", "proc", "source", "store")
)
ALLOWED = ("drwatch.agent", *NEUTRAL, *UPLOAD_SIDE)


def drwatch_imports(path: Path) -> set[str]:
    """Every `drwatch...` module a source file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("drwatch.agent")  # a relative import stays inside the package
            elif node.module:
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name == "drwatch" or name.startswith("drwatch.")}


def test_agent_modules_import_only_agent_and_neutral_modules() -> None:
    """Every module under drwatch/agent imports only drwatch.agent.*, units, errors, secretfile."""
    root = Path(drwatch.agent.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 5, "the walk found the agent's modules"
    offenders = {
        f"{path.relative_to(root)}: {name}"
        for path in sources
        for name in drwatch_imports(path)
        if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED)
    }
    assert offenders == set()


def test_neutral_modules_import_only_neutral_modules() -> None:
    """What the agent may import stays neutral: no daemon module behind a neutral one."""
    root = Path(drwatch.agent.__file__).parent.parent
    offenders = {
        f"{mod}: {name}"
        for mod in NEUTRAL
        for name in drwatch_imports(root / (mod.removeprefix("drwatch.") + ".py"))
        if not any(name == ok or name.startswith(ok + ".") for ok in NEUTRAL)
    }
    assert offenders == set()


def test_the_walk_notices_a_daemon_import(tmp_path: Path) -> None:
    """The check above can fail: a daemon import is reported."""
    source = tmp_path / "bad.py"
    source.write_text("from drwatch.config import Config\nimport drwatch.logs\n")
    assert drwatch_imports(source) == {"drwatch.config.Config", "drwatch.logs"}


def test_upload_side_imports_only_itself_and_neutral_modules() -> None:
    """The backup modules the agent uses drag no daemon module in behind them."""
    root = Path(drwatch.agent.__file__).parent.parent
    ok = (*NEUTRAL, *UPLOAD_SIDE)
    offenders = {
        f"{mod}: {name}"
        for mod in UPLOAD_SIDE
        for name in drwatch_imports(root / (mod.removeprefix("drwatch.").replace(".", "/") + ".py"))
        if not any(name == o or name.startswith(o + ".") for o in ok)
    }
    assert offenders == set()
