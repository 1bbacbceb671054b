"""The S3 file store against a real S3 API server (moto's server mode on 127.0.0.1).

The store itself: uploads (one request, and multipart), ranged reads, listing, deletion guarded
by recent use, two replicas storing one file at once, a store that is down or has no bucket.
Then through the app (ASGITransport, the copier run by hand): ETag/304, Range/206, the 302 to
a presigned URL, and copies that wait, queued, while the store refuses, then finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from service.files.s3 import S3AssetStore, parse_s3_url
from service.files.store import StoreUnavailable, open_asset_store
from service.settings import Settings
from tests.doubles import ManualClock
from tests.s3server import S3Server
from tests.unit.conftest import FakeGrsai, Relay
from tests.unit.test_assets_copier import asset, succeeded
from tests.unit.test_assets_download import URL, FileHost
from tests.unit.test_assets_results import BODY, ETAG, SHA, SIZE, copy_all, get, open_relay

MIB = 1024 * 1024


@pytest.fixture(name="s3", scope="module")
def _s3() -> Iterator[S3Server]:
    """One S3 API server for this module's tests (each test makes its own bucket)."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(name="aws_env", autouse=True)
def _aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables pointing at the test server (as a deployment sets them)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)


async def opened(url: str, staging: Path, **env: str) -> S3AssetStore:
    """An opened S3 store (closed by the caller)."""
    store = S3AssetStore(url, staging, env={**os.environ, **env})
    await store.open()
    return store


@pytest.fixture(name="store")
async def _store(s3: S3Server, tmp_path: Path) -> AsyncIterator[S3AssetStore]:
    store = await opened(f"s3://{s3.new_bucket()}/files", tmp_path / "assets")
    yield store
    await store.close()


async def put_bytes(store: S3AssetStore, data: bytes) -> str:
    """Stage `data` and put it; return its hash."""
    staged = store.staging_file()
    staged.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    await store.put(staged, sha)
    return sha


async def read_all(store: S3AssetStore, sha: str, start: int, end: int) -> bytes:
    """Bytes [start, end] of a stored file."""
    return b"".join([chunk async for chunk in store.read(sha, start, end)])


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_url_names_bucket_and_prefix(tmp_path: Path) -> None:
    """s3://bucket/a/b/ is bucket `bucket`, prefix `a/b`; the factory picks the store by URL."""
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert type(open_asset_store("", tmp_path)).__name__ == "LocalAssetStore"
    assert type(open_asset_store("s3://b/p", tmp_path)).__name__ == "S3AssetStore"
    with pytest.raises(ValueError, match="ASSET_STORE"):
        open_asset_store("gs://bucket", tmp_path)
    for wrong in ("gs://bucket", "s3://", "s3:///prefix", "/srv/files"):
        with pytest.raises(ValidationError, match="s3://bucket/prefix"):
            Settings(grsai_api_key="k", asset_store=wrong)


async def test_small_file_is_stored_read_by_ranges_and_listed(
    store: S3AssetStore, s3: S3Server
) -> None:
    """One object per content at <prefix>/ab/cd/<sha256>, read whole and by ranges."""
    sha = await put_bytes(store, BODY)
    assert s3.keys(store.bucket) == [f"files/{SHA[:2]}/{SHA[2:4]}/{SHA}"] == [store.key(sha)]
    assert await store.size(sha) == SIZE
    assert await read_all(store, sha, 0, SIZE - 1) == BODY
    assert await read_all(store, sha, 3, 10) == BODY[3:11]
    assert [h async for h in store.iter_hashes()] == [sha]
    assert await store.size("0" * 64) is None
    assert list((Path(store._staging.root) / "tmp").iterdir()) == []  # the put used its copy


async def test_large_file_goes_up_in_parts_and_reads_back(store: S3AssetStore) -> None:
    """A 20 MiB file (three 8 MiB parts) is stored whole; a range across a part boundary reads."""
    data = os.urandom(20 * MIB)
    sha = await put_bytes(store, data)
    assert await store.size(sha) == len(data)
    edge = 8 * MIB
    assert await read_all(store, sha, edge - 5, edge + 5) == data[edge - 5 : edge + 6]
    digest = hashlib.sha256()
    async for chunk in store.read(sha, 0, len(data) - 1):
        digest.update(chunk)
    assert digest.hexdigest() == sha


async def test_delete_spares_a_recently_used_file(store: S3AssetStore) -> None:
    """A reused file's Last-Modified is at least its reuse; delete honours `unused_since`."""
    sha = await put_bytes(store, BODY)
    first = await store.last_used(sha)
    assert first is not None
    await put_bytes(store, BODY)  # the same content again: refreshed, not duplicated
    used = await store.last_used(sha)
    assert used is not None
    assert used >= first
    assert [h async for h in store.iter_hashes()] == [sha]
    assert not await store.delete(sha, unused_since=used)
    assert await store.delete(sha, unused_since=used + 1)
    assert await store.size(sha) is None
    assert not await store.delete(sha, unused_since=used + 1)


async def test_two_replicas_storing_one_file_at_once(s3: S3Server, tmp_path: Path) -> None:
    """Two stores (two replicas) uploading the same 12 MiB file together leave one good object."""
    url = f"s3://{s3.new_bucket()}/shared"
    one, two = await opened(url, tmp_path / "a"), await opened(url, tmp_path / "b")
    try:
        data = os.urandom(12 * MIB)
        shas = await asyncio.gather(*(put_bytes(s, data) for s in (one, two, one, two)))
        assert len(set(shas)) == 1
        assert len(s3.keys(one.bucket)) == 1
        assert await read_all(two, shas[0], 0, len(data) - 1) == data
    finally:
        await one.close()
        await two.close()


async def test_a_store_that_is_down_names_the_setting_to_fix(s3: S3Server, tmp_path: Path) -> None:
    """Unreachable endpoint: AWS_ENDPOINT_URL; missing bucket: ASSET_STORE; puts raise."""
    down = await opened(
        "s3://bucket/x", tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}"
    )
    nobucket = await opened("s3://no-such-bucket-here/x", tmp_path)
    try:
        assert "AWS_ENDPOINT_URL" in (await down.problem() or "")
        assert "ASSET_STORE" in (await nobucket.problem() or "")
        for store in (down, nobucket):
            with pytest.raises(StoreUnavailable):
                await put_bytes(store, BODY)
    finally:
        await down.close()
        await nobucket.close()


def test_refused_credentials_name_the_aws_variables(tmp_path: Path) -> None:
    """An S3 refusal of the keys (as S3 words it) points at AWS_ACCESS_KEY_ID/SECRET."""
    store = S3AssetStore("s3://b/p", tmp_path, env={})
    for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        refused = ClientError({"Error": {"Code": code, "Message": "no"}}, "HeadBucket")
        message = store.explain(refused)
        assert "AWS_ACCESS_KEY_ID" in message
        assert "AWS_SECRET_ACCESS_KEY" in message


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


async def s3_relay(
    stack: contextlib.AsyncExitStack,
    tmp_path: Path,
    clock: ManualClock,
    grsai: FakeGrsai,
    files: FileHost,
    bucket: str,
    **changes: object,
) -> Relay:
    """An in-process relay whose file store is `s3://<bucket>/results`."""
    return await open_relay(
        stack, tmp_path, clock, grsai, files, asset_store=f"s3://{bucket}/results", **changes
    )


async def test_results_are_served_from_s3_with_etag_and_ranges(
    s3: S3Server, tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> None:
    """The copier uploads to the bucket; GET serves 200, 304 on the ETag, 206 for a range."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await s3_relay(stack, tmp_path, clock, grsai, files, s3.new_bucket())
        files.serve(URL, BODY)
        task_id = await succeeded(relay, URL)
        await copy_all(relay)
        assert (await asset(relay, task_id)).status == "stored"
        whole = await get(relay, task_id)
        assert (whole.status_code, whole.content, whole.headers["etag"]) == (200, BODY, ETAG)
        assert (await get(relay, task_id, if_none_match=ETAG)).status_code == 304
        part = await get(relay, task_id, range="bytes=2-9")
        assert (part.status_code, part.content) == (206, BODY[2:10])
        assert part.headers["content-range"] == f"bytes 2-9/{SIZE}"
        assert not list((tmp_path / "assets").glob("??/??/*"))  # nothing kept on local disk


async def test_presign_redirects_to_the_object(
    s3: S3Server, tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> None:
    """With ASSET_PRESIGN_SECONDS the answer is a 302 to a URL that serves the file itself."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await s3_relay(
            stack, tmp_path, clock, grsai, files, s3.new_bucket(), asset_presign_seconds=60
        )
        files.serve(URL, BODY)
        task_id = await succeeded(relay, URL)
        await copy_all(relay)
        moved = await get(relay, task_id)
        assert moved.status_code == 302
        assert moved.headers["cache-control"] == "no-store"
        location = moved.headers["location"]
        assert location.startswith(s3.endpoint)
        assert "X-Amz-Expires=60" in location
        async with httpx.AsyncClient() as direct:
            fetched = await direct.get(location)
        assert (fetched.status_code, fetched.content) == (200, BODY)
        assert fetched.headers["content-type"] == "image/png"


async def test_presign_is_ignored_by_the_local_store(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> None:
    """ASSET_PRESIGN_SECONDS with the folder store: the file is streamed as always."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await open_relay(stack, tmp_path, clock, grsai, files, asset_presign_seconds=60)
        files.serve(URL, BODY)
        task_id = await succeeded(relay, URL)
        await copy_all(relay)
        served = await get(relay, task_id)
        assert (served.status_code, served.content) == (200, BODY)


async def test_copies_wait_queued_while_the_bucket_is_missing(
    s3: S3Server, tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> None:
    """No bucket: the copy stays pending (no attempt spent), /readyz names asset_store and
    ASSET_STORE; once the bucket exists the same copy is stored."""
    bucket = f"later-{os.getpid()}-{os.urandom(4).hex()}"
    async with contextlib.AsyncExitStack() as stack:
        relay = await s3_relay(stack, tmp_path, clock, grsai, files, bucket)
        files.serve(URL, BODY)
        task_id = await succeeded(relay, URL)
        for _ in range(3):
            await copy_all(relay)
            clock.advance(60)
        job = await asset(relay, task_id)
        assert (job.status, job.attempts) == ("pending", 0)
        assert "ASSET_STORE" in (job.error or "")
        ready = await relay.client.get("/readyz")  # 503 anyway: no worker runs here
        assert ready.json()["checks"]["asset_store"]["status"] == "failing"
        assert "ASSET_STORE" in ready.json()["checks"]["asset_store"]["error"]
        async with httpx.AsyncClient() as direct:
            assert (await direct.put(f"{s3.endpoint}/{bucket}")).status_code == 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # a hang guard: the store's answer is cached a few seconds
        while (job := await asset(relay, task_id)).status == "pending":
            assert loop.time() < deadline, job
            clock.advance(60)
            await copy_all(relay)
            await asyncio.sleep(0.1)
        assert (job.status, job.attempts) == ("stored", 1)
        assert (await get(relay, task_id)).content == BODY
