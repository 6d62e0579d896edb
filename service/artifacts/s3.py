"""Artifacts in S3-compatible object storage, through aiobotocore (the `s3` extra).

`--artifact-store s3://bucket/prefix?endpoint=http://host:9000&region=...`; the
credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or files. An upload is a multipart upload
completed only on commit, so an object appears whole or not at all; a file that
fits in one part is a single PutObject. Downloads are ranged GETs. Multipart
uploads that a crash left open are for the bucket's lifecycle rule
(AbortIncompleteMultipartUpload) to clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

from service.artifacts.store import (
    READ_CHUNK_BYTES,
    ArtifactKey,
    ArtifactStore,
    Staged,
    StorageError,
    StoredFile,
    blocks_of,
    consume_overlapped,
)
from service.core.s3_location import S3Location

logger = logging.getLogger(__name__)

MIN_PART_BYTES = 8 * 1024 * 1024  # S3 wants parts of 5 MiB at least, but the last
MAX_PARTS = 10_000


class S3Store(ArtifactStore):
    """Objects in an S3-compatible bucket, through aiobotocore (the `s3` extra)."""

    def __init__(self, url: str) -> None:
        self.location = S3Location.parse(url)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise StorageError(
                "an s3:// artifact store needs aiobotocore: pip install 'crucible-telemetry[s3]'"
            ) from None
        config = AioConfig(
            # Path-style addressing works with every S3-compatible server; our own sha256
            # checks the content, so the SDK's extra checksums are only asked where required.
            s3={"addressing_style": "path"} if self.location.endpoint else {},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
        )
        client = get_session().create_client(
            "s3", endpoint_url=self.location.endpoint, region_name=self.location.region, config=config
        )
        self._client = await self._stack.enter_async_context(client)
        try:
            await self._client.head_bucket(Bucket=self.location.bucket)
        except _sdk_failures() as error:  # not fatal: the storage may come back; uploads answer 503 meanwhile
            logger.warning("artifact store bucket %s does not answer: %s", self.location.bucket, error)

    async def stop(self) -> None:
        await self._stack.aclose()

    async def receive(self, key: ArtifactKey, chunks: AsyncIterable[bytes], limit: int) -> Staged:
        part_bytes = max(MIN_PART_BYTES, math.ceil(limit / MAX_PARTS))
        staged = _S3Staged(self._client, self.location.bucket, _object_key(self.location, key))
        try:
            with _s3_errors(f"uploading {key.run_id}/{key.checkpoint_id}"):
                await consume_overlapped(blocks_of(chunks, part_bytes, limit), staged.add)
        except BaseException:
            await staged.discard()
            raise
        staged.sha256 = staged.hash.hexdigest()
        return staged

    async def open(self, key: ArtifactKey) -> StoredFile | None:
        object_key = _object_key(self.location, key)
        with _s3_errors(f"opening {key.run_id}/{key.checkpoint_id}"):
            try:
                head = await self._client.head_object(Bucket=self.location.bucket, Key=object_key)
            except Exception as error:
                if _s3_status(error) == 404:
                    return None
                raise
        return _S3File(self._client, self.location.bucket, object_key, int(head["ContentLength"]))

    async def remove(self, key: ArtifactKey) -> None:
        with _s3_errors(f"deleting {key.run_id}/{key.checkpoint_id}"):
            await self._client.delete_object(Bucket=self.location.bucket, Key=_object_key(self.location, key))


def _s3_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


@functools.cache
def _sdk_failures() -> tuple[type[BaseException], ...]:
    """What the SDK raises when the storage cannot be reached or refuses (imported with it)."""
    import aiohttp
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, aiohttp.ClientError)


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """The SDK's failures as StorageError, naming `what` was being done."""
    try:
        yield
    except _sdk_failures() as error:
        raise StorageError(f"object storage failed {what}: {error}") from None


class _S3Staged(Staged):
    """A multipart upload, completed on commit; a file of one part is one PutObject on commit."""

    def __init__(self, client: Any, bucket: str, object_key: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = object_key
        self.hash = hashlib.sha256()
        self._first: bytes | None = None  # held until a second part shows the file needs a multipart upload
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False

    async def add(self, block: bytes) -> None:
        self.size += len(block)
        hashed = asyncio.ensure_future(asyncio.to_thread(self.hash.update, block))
        try:
            await self._send(block)
        finally:
            await hashed

    async def _send(self, block: bytes) -> None:
        if self._upload_id is None and self._first is None:
            self._first = block
            return
        if self._upload_id is None:
            answer = await self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = answer["UploadId"]
            first, self._first = self._first, None
            assert first is not None
            await self._upload_part(first)
        await self._upload_part(block)

    async def _upload_part(self, block: bytes) -> None:
        number = len(self._parts) + 1
        answer = await self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=block
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def commit(self) -> None:
        with _s3_errors(f"placing {self._key}"):
            if self._upload_id is None:
                await self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._first or b"")
            else:
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._done = True
        self._first = None

    async def discard(self) -> None:
        if self._done:
            return
        self._done = True
        self._first = None
        if self._upload_id is not None:
            try:
                await self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except Exception:  # a lifecycle rule on the bucket cleans what this could not
                logger.warning("could not abort the multipart upload of %s", self._key, exc_info=True)


class _S3File(StoredFile):
    def __init__(self, client: Any, bucket: str, object_key: str, size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = object_key
        self.size = size

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        if length == 0:
            return
        with _s3_errors(f"reading {self._key}"):
            answer = await self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{start + length - 1}"
            )
            body = answer["Body"]
            try:
                async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                    yield chunk
            finally:
                body.close()

    async def close(self) -> None:
        pass


def _object_key(location: S3Location, key: ArtifactKey) -> str:
    return "/".join(part for part in (location.prefix, *key.folders, key.name) if part)
