"""Object storage behind a small seam: S3 (and S3-compatible providers) via aiobotocore.

Only this module sees botocore: its errors become `StoreError` here, and nothing but
bytes, keys and ints crosses the `ObjectStore` Protocol. Each location gets its own
client: the off-site provider has its own endpoint and credentials.
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, Protocol, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from drwatch.backup.config import Location
from drwatch.backup.errors import ObjectMissingError, StoreError

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class ObjectStore(Protocol):
    """What the pipeline, copies and verification need from one bucket."""

    name: str

    async def create_multipart(self, key: str) -> str: ...
    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str: ...
    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...
    async def put(self, key: str, data: bytes) -> None: ...
    async def size(self, key: str) -> int | None: ...
    def read(self, key: str, block: int) -> AsyncIterator[bytes]: ...
    async def delete(self, key: str) -> None: ...
    async def keys(self, prefix: str) -> list[str]: ...
    async def open_uploads(self, prefix: str) -> list[tuple[str, str]]: ...


class S3Store:
    """One bucket at one S3-compatible endpoint. Use as an async context manager."""

    def __init__(
        self,
        name: str,
        location: Location,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.bucket = location.bucket
        self._location = location
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 3, "mode": "standard"},
            # No request checksums beyond MD5-less defaults: verification is ours (SHA-256).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> Self:
        creds = _credentials(self._location)
        creator = AioSession().create_client(
            "s3",
            region_name=self._location.region,
            endpoint_url=self._location.endpoint,
            config=self._config,
            **creds,
        )
        self._client = await self._stack.enter_async_context(creator)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (the sandbox and tests)."""
        try:
            await self._call("head_bucket")
        except ObjectMissingError:
            conf = {}
            if self._location.region != "us-east-1":
                conf = {"CreateBucketConfiguration": {"LocationConstraint": self._location.region}}
            await self._call("create_bucket", **conf)

    async def _call(self, op: str, **params: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await getattr(self._client, op)(Bucket=self.bucket, **params)
            return result
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            where = f"{self.name}: {op} {params.get('Key', '')}".rstrip()
            if code in _MISSING_CODES:
                raise ObjectMissingError(f"{where}: not found", code=code) from None
            raise StoreError(f"{where}: {code or err}", code=code) from None
        except (TimeoutError, BotoCoreError, OSError) as err:
            raise StoreError(f"{self.name}: {op}: {type(err).__name__}: {err}") from None

    async def create_multipart(self, key: str) -> str:
        out = await self._call("create_multipart_upload", Key=key)
        return str(out["UploadId"])

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        out = await self._call(
            "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return str(out["ETag"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None:
        await self._call(
            "complete_multipart_upload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    async def put(self, key: str, data: bytes) -> None:
        await self._call("put_object", Key=key, Body=data)

    async def size(self, key: str) -> int | None:
        try:
            out = await self._call("head_object", Key=key)
        except ObjectMissingError:
            return None
        return int(out["ContentLength"])

    async def read(self, key: str, block: int) -> AsyncIterator[bytes]:
        out = await self._call("get_object", Key=key)
        async with out["Body"] as body:
            try:
                while data := await body.read(block):
                    yield data
            except (TimeoutError, BotoCoreError, OSError) as err:
                raise StoreError(f"{self.name}: reading {key}: {err}") from None

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=key)

    async def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            out = await self._call("list_objects_v2", Prefix=prefix, **token)
            found.extend(o["Key"] for o in out.get("Contents", []))
            if not out.get("IsTruncated"):
                return found
            token = {"ContinuationToken": out["NextContinuationToken"]}

    async def open_uploads(self, prefix: str) -> list[tuple[str, str]]:
        out = await self._call("list_multipart_uploads", Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for u in out.get("Uploads", [])]


def _credentials(location: Location) -> dict[str, str]:
    """The location's own keys from its credentials file, else the standard AWS chain."""
    if location.credentials_file is None:
        return {}
    with location.credentials_file.open("rb") as f:
        data = tomllib.load(f)
    try:
        return {
            "aws_access_key_id": str(data["access_key_id"]),
            "aws_secret_access_key": str(data["secret_access_key"]),
        }
    except KeyError as err:
        raise StoreError(
            f"{location.credentials_file}: missing {err.args[0]} "
            "(needs access_key_id and secret_access_key)"
        ) from None
