"""Volume health through the real AWS adapter against moto: moto has no
DescribeVolumeStatus, so the watch falls back to volume states, as it would with a
provider or a policy that refuses the call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drwatch.config import ProviderConfig
from drwatch.errors import ProviderError
from drwatch.observe.volumes import VolumeWatch
from drwatch.providers.aws import AwsProvider
from drwatch.providers.base import LaunchSpec
from tests.conftest import MotoServer

pytestmark = pytest.mark.services
US = "us-east-1"


@pytest.fixture
async def aws(moto: MotoServer) -> AsyncIterator[AwsProvider]:
    cfg = ProviderConfig(regions=[US], endpoints={US: moto.url})
    async with AwsProvider(cfg, connect_timeout=2.0, read_timeout=10.0) as provider:
        yield provider


async def test_volume_states_are_read_without_volume_statuses(aws: AwsProvider) -> None:
    spec = LaunchSpec(region=US, zone="us-east-1a", image_id="ami-12345678", client_token="t-1")
    iid = await aws.run_instance(spec)
    with pytest.raises(ProviderError):
        await aws.volume_statuses(US)
    watch = VolumeWatch(aws, [US], timeout=15.0)
    volumes = await watch.poll()
    assert any(v.attached_to == iid and v.state == "in-use" for v in volumes), volumes
    assert all(v.status == "" for v in volumes)
