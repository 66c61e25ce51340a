"""A real `kill -9`: a child process runs app_server.replace against moto_server and
SIGKILLs itself right after RunInstances returned; this process resumes from the journal
file the child left and finishes with exactly one replacement."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from drwatch.act.base import RUN_TAG, Deps
from drwatch.act.testing import FAST_SETTINGS, TEST_GROUPS, SimulatedHosts, run_plan
from drwatch.config import ProviderConfig
from drwatch.model.plan import Plan, PlaybookName, RunOutcome
from drwatch.providers.aws import AwsProvider
from drwatch.sandbox.cloud import Moto, seed
from drwatch.sandbox.topology import default_topology
from tests.conftest import MotoServer

pytestmark = pytest.mark.services

US = "us-east-1"

CHILD = """
import asyncio, json, os, signal, sys
from pathlib import Path
from drwatch.act.base import Deps
from drwatch.act.testing import FAST_SETTINGS, TEST_GROUPS, CrashAt, SimulatedHosts, run_plan
from drwatch.config import ProviderConfig
from drwatch.model.plan import Plan, PlaybookName
from drwatch.providers.aws import AwsProvider

args = json.loads(sys.argv[1])

class Kill9(CrashAt):
    def __call__(self, point: str) -> None:
        # The launch itself, not the journaled attempt before it (`...#try0:applied`).
        if point.startswith("launch_replacement/") and point.endswith(":applied") \
                and "#" not in point:
            os.kill(os.getpid(), signal.SIGKILL)

async def main() -> None:
    cfg = ProviderConfig(regions=["us-east-1"], endpoints={"us-east-1": args["url"]})
    async with AwsProvider(cfg) as provider:
        hosts = SimulatedHosts(provider, groups=TEST_GROUPS)
        deps = Deps(provider, hosts, hosts, TEST_GROUPS, FAST_SETTINGS)
        plan = Plan("inc-k9", PlaybookName.APP_REPLACE, "us-east-1", "us-east-1b", "app",
                    (args["target"],))
        await run_plan(Path(args["journal"]), deps, plan, owner="child", hook=Kill9())

asyncio.run(main())
sys.exit(3)  # not reached: the hook kills the process
"""


async def test_sigkill_after_launch_then_resume_makes_one_replacement(
    moto: MotoServer, tmp_path: Path
) -> None:
    """The child dies by SIGKILL between the launch and its journal row; the resumed run
    finds the instance by its tag, launches nothing more, and completes."""
    seeded = await asyncio.to_thread(seed, Moto(moto.url), default_topology())
    target = seeded.instances["app-3"]
    cfg = ProviderConfig(regions=[US], endpoints={US: moto.url})
    journal = tmp_path / "journal.sqlite3"
    async with AwsProvider(cfg) as provider:
        await provider.stop_instance(US, target)
        args = json.dumps({"url": moto.url, "target": target, "journal": str(journal)})
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, args)
        async with asyncio.timeout(60):
            code = await child.wait()
        assert code == -signal.SIGKILL
        launched = [i for i in await provider.instances(US) if i.tag(RUN_TAG)]
        assert len(launched) == 1  # the child's launch happened before it died

        hosts = SimulatedHosts(provider, groups=TEST_GROUPS)
        deps = Deps(provider, hosts, hosts, TEST_GROUPS, FAST_SETTINGS)
        plan = Plan("inc-k9", PlaybookName.APP_REPLACE, US, "us-east-1b", "app", (target,))
        progress = await run_plan(journal, deps, plan, owner="parent", resume=True)
        assert progress is not None
        assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
        after = [i for i in await provider.instances(US) if i.tag(RUN_TAG)]
        assert [i.id for i in after] == [i.id for i in launched]
        assert progress.new_instances == (launched[0].id,)
