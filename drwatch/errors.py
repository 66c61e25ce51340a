"""Errors that cross module seams; library errors are translated into these where it ends."""

from __future__ import annotations


class DrwatchError(Exception):
    """Base of every error drwatch raises on purpose."""


class ConfigError(DrwatchError):
    """The configuration is invalid. `problems` lists every problem, each with its dotted path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ProviderError(DrwatchError):
    """The cloud provider's API failed. `code` is the provider's error code when it gave one."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class ProviderUnreachableError(ProviderError):
    """The provider's API did not answer at all (connection refused, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="Unreachable", retryable=True)


class ProviderTimeoutError(ProviderUnreachableError):
    """The provider's API accepted the connection (or we could not tell) but did not answer
    within the deadline. Observers report this as `unknown`, a refused connection as `down`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "Timeout"


class ProviderThrottledError(ProviderError):
    """The provider asked us to slow down (RequestLimitExceeded, Throttling)."""

    def __init__(self, message: str, *, code: str = "Throttling") -> None:
        super().__init__(message, code=code, retryable=True)


class WireError(DrwatchError):
    """A message on the agent wire did not match its schema."""
