"""Result files in an S3-compatible bucket (AWS S3, MinIO, R2, ...): `ASSET_STORE=s3://bucket/prefix`.

The client is aiobotocore: async, the same request signing, error codes and S3 features as AWS's
own SDK (server-side SHA-256 checksums, copy-in-place to refresh an object, presigned URLs), and
the endpoint, region and credentials come from the standard AWS variables. This module is
imported only when an s3:// store is chosen (`service.files.store.open_asset_store`).

Objects are content-addressed, `<prefix>/<ab>/<cd>/<sha256>`, one per content. A put uploads a
staged, verified file (one request up to `PART_SIZE`, else a multipart upload of `PART_SIZE`
parts read one at a time) with its SHA-256 for the server to check, then reads the stored size
back. A put of content already stored only copies the object onto itself, which refreshes its
Last-Modified: that is what `delete(sha, unused_since)` compares, so a prune never removes a
file a replica has just reused, and two replicas storing the same file write the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from service.files.store import CHUNK, LocalAssetStore, StoreUnavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_SHA256 = re.compile(r"[0-9a-f]{64}")
PART_SIZE = 8 * 1024 * 1024
CHECK_TTL = 5.0  # seconds a readiness answer is reused
_MISSING = {"404", "NoSuchKey", "NotFound"}
_FAILED = (BotoCoreError, ClientError, OSError, TimeoutError)  # what a request may raise
_CREDENTIALS = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_CREDENTIALS |= {"ExpiredToken", "InvalidToken", "AuthorizationHeaderMalformed"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix may be empty."""
    rest = url.strip().removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"ASSET_STORE={url!r}: no bucket; write s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3AssetStore:
    """Files as objects in one bucket under a prefix, staged locally in `staging_root/tmp/`."""

    def __init__(
        self,
        url: str,
        staging_root: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        env = os.environ if env is None else env
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        self.endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        # unset: the AWS SDK's own credential chain (profile, container or instance role)
        self._keys = tuple(
            env.get(name) or None
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        )
        self._staging = LocalAssetStore(staging_root)
        self._part_size = max(part_size, 5 * 1024 * 1024)  # S3's smallest part but the last
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._checked: tuple[float, str | None] = (float("-inf"), None)
        self._check_lock = asyncio.Lock()

    def key(self, sha256: str) -> str:
        """The object key of a file (the hash is checked, so no key escapes the prefix)."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a sha256 hex digest")
        name = f"{sha256[:2]}/{sha256[2:4]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def thumbnail_key(self, sha256: str) -> str:
        """The object key of a file's thumbnail, `<prefix>/thumbs/ab/cd/<sha256>` (outside the
        names `iter_hashes` lists)."""
        name = self.key(sha256).removeprefix(f"{self.prefix}/" if self.prefix else "")
        return f"{self.prefix}/thumbs/{name}" if self.prefix else f"thumbs/{name}"

    async def put_thumbnail(self, sha256: str, data: bytes) -> None:
        """Upload the thumbnail in one request, its SHA-256 checked by the server."""
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=self.thumbnail_key(sha256),
                Body=data,
                ChecksumSHA256=_b64(hashlib.sha256(data).digest()),
            )
        except _FAILED as exc:
            raise self._unavailable(exc) from exc

    async def thumbnail(self, sha256: str) -> bytes | None:
        """The thumbnail's bytes, or None when there is none."""
        try:
            got = await self.client.get_object(Bucket=self.bucket, Key=self.thumbnail_key(sha256))
            async with got["Body"] as body:
                data: bytes = await body.read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._unavailable(exc) from exc
        except _FAILED as exc:
            raise self._unavailable(exc) from exc
        return data

    async def open(self) -> None:
        """Make the client; no request is sent, so a store that is down does not stop a start."""
        stack = contextlib.AsyncExitStack()
        config = AioConfig(
            region_name=self.region,
            signature_version="s3v4",  # presigned URLs too (X-Amz-Expires), not legacy SigV2
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            # checksums only when we send them (SHA-256): some S3-compatible services refuse
            # the SDK's default CRC trailers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        key_id, secret, token = self._keys
        client = get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            config=config,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
        )
        self._client = await stack.enter_async_context(client)
        self._stack = stack

    async def close(self) -> None:
        """Close the client's connections."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3AssetStore used before open()")
        return self._client

    def explain(self, exc: BaseException) -> str:
        """What went wrong, and which setting to fix."""
        if isinstance(exc, NoCredentialsError):
            return "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in ("NoSuchBucket", "404"):
                return f"bucket {self.bucket!r} does not exist: check the bucket in ASSET_STORE"
            if code in _CREDENTIALS:
                return (
                    f"S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID and"
                    " AWS_SECRET_ACCESS_KEY (and that they may use the bucket in ASSET_STORE)"
                )
            return f"S3 answered {code} for bucket {self.bucket!r} ({exc})"
        where = self.endpoint or f"AWS S3 in {self.region}"
        return f"cannot reach the S3 endpoint {where} ({exc}): check AWS_ENDPOINT_URL"

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        message = self.explain(exc)
        self._checked = (time.monotonic(), message)
        return StoreUnavailable(message)

    async def problem(self) -> str | None:
        """HEAD the bucket at most every `CHECK_TTL` seconds; None while it answers. While one
        check is under way (an endpoint that does not answer takes its timeouts), others get
        the last answer at once."""
        at, message = self._checked
        if time.monotonic() - at < CHECK_TTL or self._check_lock.locked():
            return message
        async with self._check_lock:
            at, message = self._checked
            if time.monotonic() - at < CHECK_TTL:
                return message
            try:
                await self.client.head_bucket(Bucket=self.bucket)
                message = None
            except _FAILED as exc:
                message = self.explain(exc)
            self._checked = (time.monotonic(), message)
            return message

    def staging_file(self) -> Path:
        """A fresh temporary file in the local `ASSET_DIR/tmp`."""
        return self._staging.staging_file()

    def clear_staging(self, older_than: float = 0.0, now: float | None = None) -> int:
        """Remove local staged downloads left by a crash (see `LocalAssetStore`)."""
        return self._staging.clear_staging(older_than, now)

    async def _head(self, sha256: str) -> dict[str, Any] | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._unavailable(exc) from exc
        except _FAILED as exc:
            raise self._unavailable(exc) from exc
        return dict(head)

    async def put(self, staged: Path, sha256: str) -> None:
        """Upload the staged file under its hash, or refresh the object already there; then
        drop the staged file (as a rename into a folder would)."""
        await self._put(staged, sha256, (await asyncio.to_thread(staged.stat)).st_size)
        await asyncio.to_thread(staged.unlink, True)

    async def _put(self, staged: Path, sha256: str, size: int) -> None:
        key = self.key(sha256)
        head = await self._head(sha256)
        try:
            if head is not None and head.get("ContentLength") == size:
                await self.client.copy_object(  # onto itself: a new Last-Modified, same bytes
                    Bucket=self.bucket,
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    Metadata={"sha256": sha256},
                )
                return
            if size <= self._part_size:
                body = await asyncio.to_thread(staged.read_bytes)
                await self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ChecksumSHA256=_b64(bytes.fromhex(sha256)),
                    Metadata={"sha256": sha256},
                )
                del body
            else:
                await self._multipart(staged, key, sha256)
        except ClientError as exc:
            if _code(exc) in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
                raise OSError(f"S3 refused the upload of {sha256}: checksum mismatch") from exc
            raise self._unavailable(exc) from exc
        except (BotoCoreError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        stored = await self._head(sha256)
        if stored is None or stored.get("ContentLength") != size:
            got = None if stored is None else stored.get("ContentLength")
            raise OSError(f"S3 holds {got} bytes for {sha256} after an upload of {size}")

    async def _multipart(self, staged: Path, key: str, sha256: str) -> None:
        """Upload in `PART_SIZE` parts, each read when sent and checked by its SHA-256."""
        upload = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata={"sha256": sha256}
        )
        upload_id = upload["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        try:
            with staged.open("rb") as f:
                number = 1
                while chunk := await asyncio.to_thread(f.read, self._part_size):
                    digest = _b64(hashlib.sha256(chunk).digest())
                    sent = await self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=digest,
                    )
                    del chunk
                    parts.append(
                        {"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": digest}
                    )
                    number += 1
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            raise

    async def size(self, sha256: str) -> int | None:
        """The object's size, or None when it is not stored."""
        try:
            head = await self._head(sha256)
        except ValueError:
            return None
        return None if head is None else int(head["ContentLength"])

    async def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """A ranged GET, streamed in CHUNK-sized pieces."""
        try:
            got = await self.client.get_object(
                Bucket=self.bucket, Key=self.key(sha256), Range=f"bytes={start}-{end}"
            )
        except _FAILED as exc:
            raise self._unavailable(exc) from exc
        async with got["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                yield chunk

    async def last_used(self, sha256: str) -> float | None:
        """The object's Last-Modified (refreshed by every reuse), None if absent."""
        head = await self._head(sha256)
        return None if head is None else float(head["LastModified"].timestamp())

    async def delete(self, sha256: str, unused_since: float) -> bool:
        """Delete the object unless it was stored or reused at `unused_since` or later."""
        used = await self.last_used(sha256)
        if used is None or used >= unused_since:
            return False
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
            await self.client.delete_object(Bucket=self.bucket, Key=self.thumbnail_key(sha256))
        except _FAILED as exc:
            raise self._unavailable(exc) from exc
        return True

    async def iter_hashes(self) -> AsyncIterator[str]:
        """Every object under the prefix that is named like a stored file."""
        start = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    name = item.get("Key", "").removeprefix(start)
                    sha = name.rsplit("/", 1)[-1]
                    if name == f"{sha[:2]}/{sha[2:4]}/{sha}" and _SHA256.fullmatch(sha):
                        yield sha
        except _FAILED as exc:
            raise self._unavailable(exc) from exc

    async def presign(self, sha256: str, seconds: int, content_type: str) -> str | None:
        """A GET URL for the object valid `seconds`, answering with the file's type."""
        params = {"Bucket": self.bucket, "Key": self.key(sha256)}
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={**params, "ResponseContentType": content_type},
            ExpiresIn=seconds,
        )
        return url
