"""Allow-listed actions: the only things a caller can make the agent do.

The registry is a plain `dict[str, Action]`. A name that is not in it is a 404; the
agent never runs a command it was sent. `CommandAction` runs a fixed argv from the
agent's own config, without a shell; the caller supplies only the values of declared
parameters, which reach the command as environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Mapping
from typing import IO, Protocol

from drwatch.agent.config import AgentConfig, CommandActionConfig
from drwatch.errors import DrwatchError
from drwatch.units import format_duration

MAX_PARAM_VALUE = 1024
MAX_OUTPUT = 4096
ENV_PREFIX = "DRWATCH_PARAM_"


class ActionError(DrwatchError):
    """An action was refused (`status` 400: bad parameters) or failed (500)."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class Action(Protocol):
    """One allow-listed action. Raise `ActionError` to refuse or to report failure."""

    async def __call__(self, params: dict[str, str]) -> dict[str, object]: ...


def check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """Refuse parameters that were not declared, and values that could smuggle anything."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ActionError(f"unknown parameter(s): {', '.join(unknown)}", status=400)
    for key, value in params.items():
        if len(value) > MAX_PARAM_VALUE or "\x00" in value:
            raise ActionError(f"parameter {key}: value too long or contains NUL", status=400)


class CommandAction:
    """Run `argv` (fixed by the operator's config) with params as DRWATCH_PARAM_* variables."""

    def __init__(self, cfg: CommandActionConfig) -> None:
        self._cfg = cfg
        self._allowed = frozenset(cfg.params)

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        check_params(params, self._allowed)
        env = {**os.environ, **{ENV_PREFIX + k.upper(): v for k, v in params.items()}}
        # Output goes to a file, not a pipe: a child the command leaves behind holding a
        # pipe open would keep the action (and the agent's action lock) waiting for EOF.
        with tempfile.TemporaryFile() as out:
            returncode = await self._run(env, out)
            text = _tail(out)
        if returncode != 0:
            raise ActionError(f"{self._cfg.name}: exit status {returncode}: {text[-500:]}")
        return {"exit_status": 0, "output": text}

    async def _run(self, env: dict[str, str], out: IO[bytes]) -> int:
        proc = await asyncio.create_subprocess_exec(
            *self._cfg.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        try:
            async with asyncio.timeout(self._cfg.timeout):
                return await proc.wait()
        except TimeoutError:
            raise ActionError(
                f"{self._cfg.name}: timed out after {format_duration(self._cfg.timeout)}"
            ) from None
        finally:
            # Timed out or cancelled (the agent is stopping): the command and everything
            # it started go, so nothing it spawned outlives the action.
            if proc.returncode is None:
                _kill_group(proc.pid)
                await proc.wait()


def _tail(out: IO[bytes]) -> str:
    """The last MAX_OUTPUT bytes the command wrote, as text."""
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - MAX_OUTPUT))
    return out.read().decode("utf-8", "replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def build_actions(
    cfg: AgentConfig, builtin: Mapping[str, Action] | None = None
) -> dict[str, Action]:
    """The registry of the actions the config allows, by name: the command actions, and
    the `builtin` ones (the database actions `[postgres] actions` enables)."""
    return {**(builtin or {}), **{a.name: CommandAction(a) for a in cfg.actions}}
