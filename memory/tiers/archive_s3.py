"""L4 production: S3 (or anything speaking it) through aiobotocore."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from bus.errors import UnavailableError


class S3ArchiveTier:
    """Bodies as objects ``<prefix><key>`` in one bucket, created when missing.

    Raises UnavailableError when the endpoint cannot be reached at open.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "sophia/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client_args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key_id or None,
            "aws_secret_access_key": secret_access_key or None,
            "config": AioConfig(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        }
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def open(self) -> None:
        self._stack = AsyncExitStack()
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", **self._client_args)
        )
        try:
            await self._ensure_bucket()
        except (BotoCoreError, ClientError, OSError):
            await self.close()
            raise UnavailableError("l4: s3 does not answer") from None

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            await self._client.create_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    async def put(self, key: str, data: bytes) -> None:
        await self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    async def get(self, key: str) -> bytes | None:
        try:
            reply = await self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        async with reply["Body"] as stream:
            return await stream.read()

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    async def count(self) -> int:
        n = 0
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            n += len(page.get("Contents", []))
        return n
