"""drwatch: a disaster-recovery watcher."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
