"""GET /v1/tasks/{id}/results/{n} through ASGITransport: the copy, caching, ranges, errors.

The relay here is built like conftest's, but its one outbound transport serves both the fake
GrsAI and the result files (routed by Host header), and its resolver knows the file hosts, so
the app's own copier downloads the files it serves.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import Seams, create_app
from service.clock import rfc3339
from tests.doubles import ManualClock
from tests.unit.conftest import (
    GRSAI_URL,
    RELAY_URL,
    FakeEntropy,
    FakeGrsai,
    Relay,
    relay_settings,
    started,
)
from tests.unit.test_assets_copier import drain, succeeded
from tests.unit.test_assets_download import FILES, URL, FileHost, public_dns
from tests.unit.test_assets_sniff import png

BODY = png(16, 12)
SHA = hashlib.sha256(BODY).hexdigest()
ETAG = f'"{SHA}"'
SIZE = len(BODY)


async def open_relay(
    stack: contextlib.AsyncExitStack,
    tmp_path: Path,
    clock: ManualClock,
    grsai: FakeGrsai,
    files: FileHost,
    **changes: Any,
) -> Relay:
    """A relay whose outbound HTTP reaches the fake GrsAI and `files`; closed with `stack`."""
    grsai_host = httpx.URL(GRSAI_URL).host

    async def route(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == grsai_host:
            return await grsai.handle(request)
        return await files.handle(request)

    seams = Seams(
        upstream_transport=httpx.MockTransport(route),
        clock=clock,
        entropy=FakeEntropy(),
        resolver=public_dns(),
    )
    app = create_app(relay_settings(tmp_path, **changes), seams=seams, run_workers=False)
    return await started(stack, app, clock, grsai)


async def copy_all(relay: Relay) -> None:
    """Run the app's copier once and wait for the copies it started."""
    await relay.copier.run_once()
    await drain(relay.copier)


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


@pytest.fixture(name="relay")
async def _relay(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> AsyncIterator[Relay]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_relay(stack, tmp_path, clock, grsai, files)


@pytest.fixture(name="task_id")
async def _task_id(relay: Relay, files: FileHost) -> str:
    """A succeeded task whose one result (BODY) is stored."""
    files.serve(URL, BODY, headers={"Content-Type": "text/plain"})
    task_id = await succeeded(relay, URL)
    await copy_all(relay)
    return task_id


async def get(
    relay: Relay, task_id: str, n: str = "0", key: str | None = None, **headers: str
) -> httpx.Response:
    """GET result `n` of a task with extra headers (underscores become dashes)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return await relay.client.get(
        f"/v1/tasks/{task_id}/results/{n}", headers={**relay.auth(key), **sent}
    )


def error_code(response: httpx.Response) -> str:
    """The `error.code` of a JSON error response."""
    code: str = response.json()["error"]["code"]
    return code


async def test_stored_copy_is_served_with_caching_headers(relay: Relay, task_id: str) -> None:
    """200 with the sniffed type, ETag (the hash), long private caching and the exact bytes."""
    response = await get(relay, task_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"  # sniffed, not the upstream header
    assert response.headers["etag"] == ETAG
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["accept-ranges"] == "bytes"
    assert "content-range" not in response.headers
    assert response.content == BODY


async def test_task_shows_our_url_for_the_copy(relay: Relay, task_id: str) -> None:
    """The task's result entry points at this route (absolute, under PUBLIC_BASE_URL)."""
    task = (await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())).json()
    (entry,) = task["results"]
    assert entry["url"] == f"{RELAY_URL}/v1/tasks/{task_id}/results/0"
    assert (entry["sha256"], entry["bytes"], entry["width"], entry["height"]) == (SHA, SIZE, 16, 12)
    assert entry["stored_at"] == rfc3339(relay.clock.now()), "RFC 3339, like every timestamp"
    path = entry["url"].removeprefix(RELAY_URL)
    assert (await relay.client.get(path, headers=relay.auth())).content == BODY


@pytest.mark.parametrize("tag", [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*"])
async def test_matching_if_none_match_is_304(relay: Relay, task_id: str, tag: str) -> None:
    """If-None-Match with our ETag (weakly compared, in a list, or *) answers 304, no body."""
    response = await get(relay, task_id, if_none_match=tag)
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == ETAG
    assert response.headers["cache-control"].startswith("private")


async def test_other_if_none_match_is_200(relay: Relay, task_id: str) -> None:
    """A different ETag does not match."""
    response = await get(relay, task_id, if_none_match='"0000"')
    assert (response.status_code, response.content) == (200, BODY)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", SIZE - 5, SIZE - 1),
        ("bytes=10-", 10, SIZE - 1),
        ("bytes=5-5", 5, 5),
        (f"bytes=0-{SIZE * 10}", 0, SIZE - 1),  # end clipped to the file
        (f"bytes=-{SIZE * 10}", 0, SIZE - 1),  # suffix longer than the file
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
        (" bytes=0-9 ", 0, 9),
    ],
)
async def test_single_range_is_206(
    relay: Relay, task_id: str, header: str, start: int, end: int
) -> None:
    """A satisfiable byte range answers 206 with Content-Range and exactly those bytes."""
    response = await get(relay, task_id, range=header)
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["etag"] == ETAG
    assert response.content == BODY[start : end + 1]


@pytest.mark.parametrize(
    "header", [f"bytes={SIZE}-", f"bytes={SIZE + 100}-{SIZE + 200}", "bytes=-0", "bytes=9-3"]
)
async def test_unsatisfiable_range_is_416(relay: Relay, task_id: str, header: str) -> None:
    """A range outside the file answers 416 with `Content-Range: bytes */size` and a JSON error."""
    response = await get(relay, task_id, range=header)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.json()["error"] == {
        "code": "range_not_satisfiable",
        "message": response.json()["error"]["message"],
        "size": SIZE,
    }


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=-", "bytes=a-b", "bytes"])
async def test_unsupported_range_gets_the_whole_file(
    relay: Relay, task_id: str, header: str
) -> None:
    """Multiple ranges, other units and malformed values are answered with the whole file."""
    response = await get(relay, task_id, range=header)
    assert (response.status_code, response.content) == (200, BODY)


async def test_if_range_with_our_etag_honours_the_range(relay: Relay, task_id: str) -> None:
    """If-Range equal to the ETag: the range is served."""
    response = await get(relay, task_id, range="bytes=0-9", if_range=ETAG)
    assert (response.status_code, response.content) == (206, BODY[:10])


@pytest.mark.parametrize("validator", ['"stale"', f"W/{ETAG}", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_if_range_mismatch_sends_the_whole_file(
    relay: Relay, task_id: str, validator: str
) -> None:
    """If-Range not strongly matching our ETag: the range is ignored, 200 with every byte."""
    response = await get(relay, task_id, range="bytes=0-9", if_range=validator)
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert response.content == BODY


async def test_if_range_mismatch_beats_an_unsatisfiable_range(relay: Relay, task_id: str) -> None:
    """RFC 9110 13.1.5: a non-matching If-Range means the Range is ignored, even a bad one."""
    response = await get(relay, task_id, range=f"bytes={SIZE}-", if_range='"stale"')
    assert (response.status_code, response.content) == (200, BODY)


async def test_if_none_match_wins_over_range(relay: Relay, task_id: str) -> None:
    """A matching If-None-Match answers 304 even with a Range."""
    response = await get(relay, task_id, range="bytes=0-9", if_none_match=ETAG)
    assert response.status_code == 304


async def test_another_key_cannot_read_the_copy(relay: Relay, task_id: str) -> None:
    """Another API key gets the same 404 as for a task that does not exist."""
    other, _ = await relay.new_key("someone else")
    response = await get(relay, task_id, key=other)
    assert (response.status_code, error_code(response)) == (404, "not_found")
    missing = await get(relay, "task_doesnotexist")
    assert response.json() == missing.json()


async def test_no_key_is_401(relay: Relay, task_id: str) -> None:
    """The route needs an API key."""
    response = await relay.client.get(f"/v1/tasks/{task_id}/results/0")
    assert response.status_code == 401


async def test_pending_copy_is_404_asset_pending(relay: Relay, files: FileHost) -> None:
    """Before the copy is stored the route says so (and never serves GrsAI's file)."""
    files.serve(URL, BODY)
    task_id = await succeeded(relay, URL)
    response = await get(relay, task_id)
    assert response.status_code == 404
    assert error_code(response) == "asset_pending"
    assert response.json()["error"]["reason"] is None
    assert files.seen == []


async def test_retrying_copy_shows_its_last_error(relay: Relay, files: FileHost) -> None:
    """A copy waiting for a retry is still pending, with the reason of its last failure."""
    files.serve(URL, b"", 503)
    task_id = await succeeded(relay, URL)
    await copy_all(relay)
    response = await get(relay, task_id)
    assert error_code(response) == "asset_pending"
    assert response.json()["error"]["reason"] == "result URL answered HTTP 503"


async def test_failed_copy_is_404_asset_failed_with_reason(relay: Relay, files: FileHost) -> None:
    """A copy that failed for good answers 404 `asset_failed` with why."""
    files.serve(URL, b"denied", 403)
    task_id = await succeeded(relay, URL)
    await copy_all(relay)
    response = await get(relay, task_id)
    assert response.status_code == 404
    assert error_code(response) == "asset_failed"
    assert response.json()["error"]["reason"] == "result URL answered HTTP 403"


async def test_missing_file_is_404_asset_missing(relay: Relay, task_id: str) -> None:
    """A stored record whose file vanished from disk is reported, not a 500."""
    relay.assets.path(SHA).unlink()
    response = await get(relay, task_id)
    assert (response.status_code, error_code(response)) == (404, "asset_missing")


@pytest.mark.parametrize("n", ["1", "9999", "abc", "-1", "00000", "0x0", "%C2%B2", "1.0"])
async def test_unknown_result_number_is_404(relay: Relay, task_id: str, n: str) -> None:
    """An index beyond the results, or not a small decimal number, is a plain 404."""
    response = await get(relay, task_id, n)
    assert (response.status_code, error_code(response)) == (404, "not_found")


async def test_second_result_is_served_separately(relay: Relay, files: FileHost) -> None:
    """Each result index serves its own file."""
    other = png(2, 2, seed=9)
    files.serve(URL, BODY)
    files.serve(f"https://{FILES}/out/b.png", other)
    task_id = await succeeded(relay, URL, f"https://{FILES}/out/b.png")
    await copy_all(relay)
    assert (await get(relay, task_id, "0")).content == BODY
    second = await get(relay, task_id, "1")
    assert second.content == other
    assert second.headers["etag"] == f'"{hashlib.sha256(other).hexdigest()}"'
