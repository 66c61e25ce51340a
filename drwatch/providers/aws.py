"""The AWS adapter: EC2 through aiobotocore, behind the `Inventory` and `Compute` seams.

This is the only module where botocore exists. Every botocore/aiohttp failure is
translated here into `drwatch.errors`:

- `ClientError` RequestLimitExceeded, Throttling, ... -> `ProviderThrottledError`
  (raised once our own backoff has run out of budget);
- `ClientError` with HTTP 5xx -> `ProviderError(code, retryable=True)`;
- any other `ClientError` -> `ProviderError(code)`;
- `ResponseParserError` (moto's HTML 500 for unimplemented actions) ->
  `ProviderError(code="ResponseParserError", retryable=True)`;
- connect/read timeouts and our own per-call deadline -> `ProviderTimeoutError`;
- refused or closed connections, `EndpointConnectionError` -> `ProviderUnreachableError`.

botocore's own retries are off (one attempt): a silent retry hides throttling from the
observer and stretches deadlines. We retry throttled calls only, with full jitter,
within `throttle_budget` seconds, which should stay below the observer's timeout so a
throttled region reads as throttled, not as a timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from drwatch.config import ProviderConfig
from drwatch.errors import (
    ProviderError,
    ProviderThrottledError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from drwatch.logs import get_logger
from drwatch.model.fleet import InstanceState
from drwatch.providers.base import (
    AddressInfo,
    CloudInstance,
    ImageInfo,
    LaunchSpec,
    SnapshotInfo,
    StatusCheck,
    Tags,
    VolumeInfo,
    ZoneInfo,
)


def _log() -> Any:
    # Bound at use, not import: a logger bound before logs.configure() keeps the defaults.
    return get_logger(component="provider.aws")


THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
    }
)
SERVER_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
# Tag that carries the launch's client token: lets `run_instance` find an earlier launch
# even where the endpoint ignores ClientToken (moto does).
IDEMPOTENCY_TAG = "drwatch:client-token"

Sleep = Callable[[float], Awaitable[None]]


class AwsProvider:
    """EC2 in every configured region. One client per region, created on first use.

    Use as `async with AwsProvider(cfg) as p:` or call `aclose()`; clients live in an
    `AsyncExitStack`, so closing releases every connection pool.
    """

    def __init__(
        self,
        cfg: ProviderConfig,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        throttle_budget: float = 3.0,
        page_size: int | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._session = AioSession(profile=cfg.profile)
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        # A hard ceiling per attempt on top of botocore's socket timeouts (DNS, TLS, body).
        self._call_timeout = connect_timeout + read_timeout + 1.0
        self._throttle_budget = throttle_budget
        self._page_size = page_size
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every region's client; the provider can be used again afterwards."""
        async with self._lock:
            self._clients.clear()
            await self._stack.aclose()

    # -- plumbing -------------------------------------------------------------------

    async def _client(self, region: str) -> Any:
        if region not in self._cfg.regions:
            raise ProviderError(f"region {region} is not configured", code="UnknownRegion")
        async with self._lock:
            client = self._clients.get(region)
            if client is None:
                creator = self._session.create_client(
                    "ec2",
                    region_name=region,
                    endpoint_url=self._cfg.endpoints.get(region),
                    config=self._config,
                )
                client = await self._stack.enter_async_context(creator)
                self._clients[region] = client
            return client

    async def _call(self, region: str, op: str, **params: Any) -> dict[str, Any]:
        """One API call with translated errors; throttling is retried within the budget."""
        client = await self._client(region)
        deadline = self._clock() + self._throttle_budget
        attempt = 0
        while True:
            try:
                return await self._attempt(client, region, op, params)
            except ProviderThrottledError as err:
                delay = self._backoff(attempt)
                if self._clock() + delay > deadline:
                    _log().debug("provider.throttled", region=region, op=op, attempts=attempt + 1)
                    raise ProviderThrottledError(
                        f"{op} in {region}: throttled after {attempt + 1} attempts", code=err.code
                    ) from err
                attempt += 1
                await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads retries of many callers apart.
        return self._rng.uniform(0, min(8.0, 0.2 * 2**attempt))

    async def _attempt(
        self, client: Any, region: str, op: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._call_timeout):
                result: dict[str, Any] = await getattr(client, op)(**params)
                return result
        except (ClientError, BotoCoreError, ResponseParserError) as err:
            raise translate(err, region=region, op=op) from err
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{op} in {region}: no answer within {self._call_timeout:g}s"
            ) from None

    async def _pages(
        self, region: str, op: str, key: str, *, paged: bool = True, **params: Any
    ) -> list[dict[str, Any]]:
        """Every item under `key` across all pages (follows NextToken)."""
        if paged and self._page_size is not None:
            params["MaxResults"] = self._page_size
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._call(region, op, **params, **({"NextToken": token} if token else {}))
            items.extend(page.get(key, []))
            token = page.get("NextToken")
            if not token:
                return items

    # -- Inventory ------------------------------------------------------------------

    async def ping(self, region: str) -> None:
        await self._call(region, "describe_availability_zones")

    async def instances(self, region: str) -> list[CloudInstance]:
        reservations = await self._pages(region, "describe_instances", "Reservations")
        statuses = await self._pages(
            region, "describe_instance_status", "InstanceStatuses", IncludeAllInstances=True
        )
        by_id = {s["InstanceId"]: s for s in statuses}
        return [
            _instance(region, raw, by_id.get(raw["InstanceId"]))
            for r in reservations
            for raw in r.get("Instances", [])
        ]

    async def zones(self, region: str) -> list[ZoneInfo]:
        raw = await self._call(region, "describe_availability_zones")
        return [
            ZoneInfo(name=z["ZoneName"], region=region, state=z.get("State", "available"))
            for z in raw.get("AvailabilityZones", [])
        ]

    async def volumes(self, region: str) -> list[VolumeInfo]:
        raw = await self._pages(region, "describe_volumes", "Volumes")
        return [_volume(region, v) for v in raw]

    async def volume_statuses(self, region: str) -> dict[str, str]:
        """Volume id -> its I/O status (`ok`, `impaired`, `warning`, `insufficient-data`),
        from DescribeVolumeStatus. Read by drwatch.observe.volumes (not in the Protocol:
        a provider without it is asked only for volume states)."""
        raw = await self._pages(region, "describe_volume_status", "VolumeStatuses")
        return {
            str(v["VolumeId"]): str((v.get("VolumeStatus") or {}).get("Status", ""))
            for v in raw
            if "VolumeId" in v
        }

    async def snapshots(self, region: str) -> list[SnapshotInfo]:
        raw = await self._pages(region, "describe_snapshots", "Snapshots", OwnerIds=["self"])
        return [_snapshot(region, s) for s in raw]

    async def addresses(self, region: str) -> list[AddressInfo]:
        raw = await self._call(region, "describe_addresses")
        return [_address(region, a) for a in raw.get("Addresses", [])]

    async def images(self, region: str) -> list[ImageInfo]:
        raw = await self._pages(region, "describe_images", "Images", paged=False, Owners=["self"])
        return [
            ImageInfo(
                id=i["ImageId"],
                region=region,
                name=i.get("Name", ""),
                tags=_tags(i),
                state=i.get("State", "available"),
            )
            for i in raw
        ]

    # -- Compute --------------------------------------------------------------------

    async def run_instance(self, spec: LaunchSpec) -> str:
        existing = await self._launched_with(spec.region, spec.client_token)
        if existing is not None:
            return existing
        tags = (*spec.tags, (IDEMPOTENCY_TAG, spec.client_token))
        params: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": spec.client_token,
            "Placement": {"AvailabilityZone": spec.zone},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": _aws_tags(tags)}],
        }
        if spec.user_data:
            params["UserData"] = spec.user_data  # botocore base64-encodes it
        raw = await self._call(spec.region, "run_instances", **params)
        instance_id: str = raw["Instances"][0]["InstanceId"]
        _log().info("provider.launched", region=spec.region, zone=spec.zone, instance=instance_id)
        return instance_id

    async def _launched_with(self, region: str, client_token: str) -> str | None:
        filters = [{"Name": f"tag:{IDEMPOTENCY_TAG}", "Values": [client_token]}]
        reservations = await self._pages(
            region, "describe_instances", "Reservations", paged=False, Filters=filters
        )
        found = [i["InstanceId"] for r in reservations for i in r.get("Instances", [])]
        return found[0] if found else None

    async def stop_instance(self, region: str, instance_id: str) -> None:
        await self._call(region, "stop_instances", InstanceIds=[instance_id])

    async def terminate_instance(self, region: str, instance_id: str) -> None:
        await self._call(region, "terminate_instances", InstanceIds=[instance_id])

    async def associate_address(self, region: str, allocation_id: str, instance_id: str) -> None:
        await self._call(
            region,
            "associate_address",
            AllocationId=allocation_id,
            InstanceId=instance_id,
            AllowReassociation=True,
        )

    async def create_snapshot(self, region: str, volume_id: str, tags: Tags) -> str:
        params: dict[str, Any] = {"VolumeId": volume_id}
        if tags:
            params["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": _aws_tags(tags)}]
        raw = await self._call(region, "create_snapshot", **params)
        snapshot_id: str = raw["SnapshotId"]
        return snapshot_id

    async def delete_snapshot(self, region: str, snapshot_id: str) -> None:
        """Retention of backup snapshots (drwatch.backup.fleet); gone already is done."""
        try:
            await self._call(region, "delete_snapshot", SnapshotId=snapshot_id)
        except ProviderError as err:
            if "NotFound" not in str(err):
                raise

    async def create_volume(
        self,
        region: str,
        zone: str,
        snapshot_id: str,
        tags: Tags,
        size_gib: int | None = None,
        *,
        client_token: str | None = None,
    ) -> str:
        if client_token is not None:
            existing = await self._volume_made_with(region, client_token)
            if existing is not None:
                return existing
            tags = (*tags, (IDEMPOTENCY_TAG, client_token))
        params: dict[str, Any] = {"AvailabilityZone": zone, "SnapshotId": snapshot_id}
        if client_token is not None:
            params["ClientToken"] = client_token
        if size_gib is not None:
            params["Size"] = size_gib
        if tags:
            params["TagSpecifications"] = [{"ResourceType": "volume", "Tags": _aws_tags(tags)}]
        raw = await self._call(region, "create_volume", **params)
        volume_id: str = raw["VolumeId"]
        return volume_id

    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str:
        raw = await self._call(
            region,
            "copy_image",
            SourceRegion=source_region,
            SourceImageId=image_id,
            Name=name,
            ClientToken=client_token,
        )
        new_id: str = raw["ImageId"]
        return new_id

    async def copy_snapshot(
        self, region: str, source_region: str, snapshot_id: str, tags: Tags
    ) -> str:
        params: dict[str, Any] = {"SourceRegion": source_region, "SourceSnapshotId": snapshot_id}
        if tags:
            params["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": _aws_tags(tags)}]
        raw = await self._call(region, "copy_snapshot", **params)
        new_id: str = raw["SnapshotId"]
        return new_id

    async def _volume_made_with(self, region: str, client_token: str) -> str | None:
        """A volume tagged with the token (moto ignores ClientToken; AWS honours it)."""
        filters = [{"Name": f"tag:{IDEMPOTENCY_TAG}", "Values": [client_token]}]
        raw = await self._call(region, "describe_volumes", Filters=filters)
        found: list[str] = [v["VolumeId"] for v in raw.get("Volumes", [])]
        return found[0] if found else None

    async def attach_volume(
        self, region: str, volume_id: str, instance_id: str, device: str
    ) -> None:
        await self._check_attachable(region, volume_id, instance_id)
        await self._call(
            region, "attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device
        )

    async def _check_attachable(self, region: str, volume_id: str, instance_id: str) -> None:
        """Refuse what AWS refuses and moto accepts: an in-use volume, a cross-zone attach."""
        vols = await self._call(region, "describe_volumes", VolumeIds=[volume_id])
        volume = _volume(region, vols["Volumes"][0])
        if volume.state != "available":
            raise ProviderError(
                f"{volume_id} is {volume.state} (attached to {volume.attached_to})",
                code="IncorrectState",
            )
        res = await self._call(region, "describe_instances", InstanceIds=[instance_id])
        zone = res["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
        if zone != volume.zone:
            raise ProviderError(
                f"{volume_id} is in {volume.zone}, {instance_id} in {zone}",
                code="InvalidVolume.ZoneMismatch",
            )

    async def detach_volume(self, region: str, volume_id: str, instance_id: str) -> None:
        await self._call(region, "detach_volume", VolumeId=volume_id, InstanceId=instance_id)

    async def tag(self, region: str, resource_id: str, tags: Tags) -> None:
        await self._call(region, "create_tags", Resources=[resource_id], Tags=_aws_tags(tags))


# -- translation ---------------------------------------------------------------------


def translate(err: Exception, *, region: str, op: str) -> ProviderError:
    """A botocore error as the drwatch error the rest of the code understands."""
    where = f"{op} in {region}"
    if isinstance(err, ClientError):
        return _client_error(err, where)
    if isinstance(err, ResponseParserError):
        return ProviderError(
            f"{where}: unparseable answer (not implemented?)",
            code="ResponseParserError",
            retryable=True,
        )
    if isinstance(err, ConnectTimeoutError | ReadTimeoutError):
        return ProviderTimeoutError(f"{where}: {err}")
    if isinstance(err, HTTPClientError | BotoConnectionError):
        return ProviderUnreachableError(f"{where}: {err}")
    if isinstance(err, NoCredentialsError):
        return ProviderError(f"{where}: no AWS credentials found", code="NoCredentials")
    return ProviderError(f"{where}: {err}", code=type(err).__name__)


def _client_error(err: ClientError, where: str) -> ProviderError:
    info = err.response.get("Error", {})
    code = str(info.get("Code", "Unknown"))
    message = f"{where}: {code}: {info.get('Message', '')}".rstrip(": ")
    if code in THROTTLE_CODES:
        return ProviderThrottledError(message, code=code)
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    server_side = status >= 500 or code in SERVER_CODES
    return ProviderError(message, code=code, retryable=server_side)


# -- mapping AWS shapes to domain types -----------------------------------------------


def _tags(raw: dict[str, Any]) -> Tags:
    return tuple(sorted((t["Key"], t.get("Value", "")) for t in raw.get("Tags", [])))


def _aws_tags(tags: Tags) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags]


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _check(summary: dict[str, Any] | None) -> StatusCheck:
    try:
        return StatusCheck((summary or {}).get("Status", "insufficient-data"))
    except ValueError:
        return StatusCheck.INSUFFICIENT_DATA


def _state(name: str) -> InstanceState:
    try:
        return InstanceState(name)
    except ValueError:
        return InstanceState.UNKNOWN


def _instance(region: str, raw: dict[str, Any], status: dict[str, Any] | None) -> CloudInstance:
    volumes = tuple(m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", []) if "Ebs" in m)
    # describe_instance_status omits instances it knows nothing about yet: we cannot tell.
    system = _check(status.get("SystemStatus")) if status else StatusCheck.INSUFFICIENT_DATA
    inst = _check(status.get("InstanceStatus")) if status else StatusCheck.INSUFFICIENT_DATA
    return CloudInstance(
        id=raw["InstanceId"],
        region=region,
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        state=_state(raw.get("State", {}).get("Name", "")),
        private_ip=raw.get("PrivateIpAddress") or None,
        public_ip=raw.get("PublicIpAddress") or None,
        image_id=raw.get("ImageId"),
        instance_type=raw.get("InstanceType"),
        volumes=volumes,
        tags=_tags(raw),
        launched_at=_epoch(raw.get("LaunchTime")),
        system_status=system,
        instance_status=inst,
    )


def _volume(region: str, raw: dict[str, Any]) -> VolumeInfo:
    attachments = [a for a in raw.get("Attachments", []) if a.get("State") != "detached"]
    first = attachments[0] if attachments else {}
    return VolumeInfo(
        id=raw["VolumeId"],
        region=region,
        zone=raw.get("AvailabilityZone", ""),
        state=raw.get("State", ""),
        size_gib=int(raw.get("Size", 0)),
        attached_to=first.get("InstanceId"),
        device=first.get("Device"),
        snapshot_id=raw.get("SnapshotId") or None,
        tags=_tags(raw),
    )


def _snapshot(region: str, raw: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(
        id=raw["SnapshotId"],
        region=region,
        volume_id=raw.get("VolumeId") or None,
        state=raw.get("State", ""),
        started_at=_epoch(raw.get("StartTime")) or 0.0,
        tags=_tags(raw),
    )


def _address(region: str, raw: dict[str, Any]) -> AddressInfo:
    return AddressInfo(
        allocation_id=raw.get("AllocationId", ""),
        region=region,
        public_ip=raw.get("PublicIp", ""),
        instance_id=raw.get("InstanceId") or None,
        association_id=raw.get("AssociationId") or None,
        tags=_tags(raw),
    )
