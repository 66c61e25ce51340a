"""The on-host agent: signed facts and allow-listed actions (see docs/agent.md).

Runs on monitored servers, so it imports only `drwatch.agent.*`, `drwatch.units`,
`drwatch.errors` and `drwatch.secretfile` (tests/unit/test_agent_imports.py checks).
"""
