"""HTTP/TCP probes returning `ProbeResult`s that become `Observation`s."""

from drwatch.probes.http import HttpConditions, HttpProbe, new_session
from drwatch.probes.result import ProbeResult
from drwatch.probes.tcp import TcpProbe

__all__ = ["HttpConditions", "HttpProbe", "ProbeResult", "TcpProbe", "new_session"]
