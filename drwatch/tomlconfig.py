"""TOML config files validated by pydantic, with every problem named by its dotted path.

Neutral ground: the daemon's config and the agent's both use it, and it imports only
`drwatch.errors`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from drwatch.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_PLAIN_MESSAGES = {"extra_forbidden": "unknown key", "missing": "required key is missing"}


def dotted(loc: tuple[int | str, ...], tags: frozenset[str] = frozenset()) -> str:
    """`groups[1].checks[0].port` from pydantic's location tuple. Segments pydantic adds
    itself (validator names like `function-after[...]`, or a discriminated union's tag
    right after a list index) are not keys the operator wrote, so they are left out."""
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or (isinstance(previous, int) and part in tags):
            pass
        else:
            out += f".{part}" if out else part
        previous = part
    return out or "(top level)"


def problems(
    err: ValidationError,
    *,
    tags: frozenset[str] = frozenset(),
    messages: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem. `messages` replaces pydantic's text by error type.

    A model validator may report several problems, one per line; a line that already
    names its own path (`groups: ...`) at the top level is kept as it is."""
    wording = {**_PLAIN_MESSAGES, **(messages or {})}
    lines: list[str] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = wording.get(e["type"], str(e["msg"]).removeprefix("Value error, "))
        path = dotted(loc, tags)
        for line in msg.split("\n"):
            own_path = path == "(top level)" and ":" in line
            lines.append(line if own_path else f"{path}: {line}")
    return lines


def validate(
    model: type[M],
    data: dict[str, Any],
    *,
    tags: frozenset[str] = frozenset(),
    messages: Mapping[str, str] | None = None,
) -> M:
    """The validated model, or ConfigError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems(err, tags=tags, messages=messages)) from None


# Configs, topologies and drill scenarios are a few kilobytes; a megabyte is a wrong file.
MAX_FILE_BYTES = 1024 * 1024


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML as a dict, or ConfigError: a file that cannot be read, is larger
    than MAX_FILE_BYTES, is not UTF-8 (with the line and byte of the first bad byte) or
    is not TOML (with tomllib's line and column)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB: not a config file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8: {_position(raw, err.start)}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError([f"{path}: not valid TOML: {err}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: not valid TOML: arrays or tables nested too deeply"]) from None
    except ValueError as err:  # e.g. an integer past Python's 4300-digit conversion limit
        raise ConfigError([f"{path}: not valid TOML: {str(err)[:200]}"]) from None


def _position(raw: bytes, offset: int) -> str:
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return f"byte {raw[offset]:#04x} at line {line}, column {column} (byte offset {offset})"
