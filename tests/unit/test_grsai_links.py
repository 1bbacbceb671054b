"""Result URLs of the GrsAI-compatible paths: signed, expiring links to our stored copies that a
plain GET fetches (GrsAI's clients download without a key), served as the owner's download is."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.api.grsai_render import COPY_WAIT
from service.api.openapi import document_for
from tests.doubles import ManualClock
from tests.unit.conftest import RELAY_URL, FakeGrsai, Relay
from tests.unit.test_assets_download import URL, FileHost
from tests.unit.test_assets_results import BODY, ETAG, SIZE, copy_all, open_relay
from tests.unit.test_grsai_api import poll, submit_poll
from tests.unit.test_openapi import conforms

SECRET = "whsec_test-secret"
WEEK = 604800


@pytest.fixture(name="relay")
async def _relay(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> AsyncIterator[Relay]:
    """A relay that copies result files, whose caller's key has a signing secret."""
    async with contextlib.AsyncExitStack() as stack:
        relay = await open_relay(stack, tmp_path, clock, grsai, files)
        await relay.storage.add_signing_secret(relay.key_id, SECRET, clock.now(), None)
        yield relay


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


async def finished(relay: Relay, files: FileHost, *, copy: bool = True) -> str:
    """A GrsAI-submitted task that succeeded with one result (copied unless `copy` is off)."""
    files.serve(URL, BODY, headers={"Content-Type": "image/png"})
    task_id = await submit_poll(relay)
    upstream = (await relay.task(task_id)).upstream_id
    assert upstream is not None
    response = await relay.callback(relay.grsai.token(), relay.grsai.succeed(upstream, URL))
    assert response.status_code == 200
    if copy:
        await copy_all(relay)
    return task_id


async def link_of(relay: Relay, task_id: str) -> str:
    """The first result URL `/v1/draw/result` gives for the task."""
    url: str = (await poll(relay, task_id)).json()["data"]["results"][0]["url"]
    return url


async def fetch(relay: Relay, url: str, **headers: str) -> httpx.Response:
    """A plain GET, as a GrsAI client downloads a result URL: no key."""
    return await relay.client.get(url, headers=headers)


def code(response: httpx.Response) -> str:
    """The relay error code of a JSON error."""
    found: str = response.json()["error"]["code"]
    return found


async def test_stored_copy_is_a_signed_link_fetched_without_a_key(
    relay: Relay, files: FileHost
) -> None:
    """Once copied, the result URL is our signed link; a keyless GET gets the exact bytes."""
    task_id = await finished(relay, files)
    url = await link_of(relay, task_id)
    parts = urlsplit(url)
    assert url.startswith(f"{RELAY_URL}/v1/files/{task_id}/0?")
    query = parse_qs(parts.query)
    assert int(query["expires"][0]) == int(relay.clock.now()) + WEEK
    response = await fetch(relay, url)
    assert response.status_code == 200
    assert response.content == BODY
    assert response.headers["etag"] == ETAG
    assert response.headers["content-type"] == "image/png"


async def test_link_serves_ranges_and_conditional_requests(relay: Relay, files: FileHost) -> None:
    """The link answers as the owner's download does: 206 for a range, 304 for its ETag."""
    url = await link_of(relay, await finished(relay, files))
    ranged = await fetch(relay, url, Range="bytes=0-9")
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 0-9/{SIZE}"
    assert ranged.content == BODY[:10]
    assert (await fetch(relay, url, **{"If-None-Match": ETAG})).status_code == 304


async def test_finished_task_waits_for_its_copy(relay: Relay, files: FileHost) -> None:
    """While the copy is made the finished task is shown running (progress 99); a copy still
    not stored COPY_WAIT seconds after the end leaves GrsAI's own URL to show."""
    task_id = await finished(relay, files, copy=False)
    data = (await poll(relay, task_id)).json()["data"]
    assert (data["status"], data["progress"], data["results"], data["url"]) == (
        "running",
        99,
        None,
        "",
    )
    relay.clock.advance(COPY_WAIT)
    assert await link_of(relay, task_id) == URL


async def test_key_without_signing_secret_gets_grsais_url(relay: Relay, files: FileHost) -> None:
    """A key with no signing secret cannot sign links: GrsAI's URL is shown instead."""
    relay.key, relay.key_id = await relay.new_key("unsigned")
    assert await link_of(relay, await finished(relay, files)) == URL


async def test_expired_link_is_403(relay: Relay, files: FileHost) -> None:
    """Past RESULT_LINK_SECONDS the link is 403 `link_expired`; a new poll gives a fresh one."""
    task_id = await finished(relay, files)
    url = await link_of(relay, task_id)
    relay.clock.advance(WEEK + 1)
    expired = await fetch(relay, url)
    assert expired.status_code == 403
    assert code(expired) == "link_expired"
    assert (await fetch(relay, await link_of(relay, task_id))).status_code == 200


async def test_tampered_links_are_403(relay: Relay, files: FileHost) -> None:
    """A changed signature, expiry, result number or another task's id: 403 `invalid_link`."""
    first = await finished(relay, files)
    second = await finished(relay, files)
    url = await link_of(relay, first)
    query = parse_qs(urlsplit(url).query)
    expires, sig = query["expires"][0], query["sig"][0]
    tampered = [
        url.replace(sig, sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")),
        url.replace(f"expires={expires}", f"expires={int(expires) + 3600}"),
        url.replace(f"/{first}/0?", f"/{second}/0?"),
        url.replace(f"/{first}/0?", f"/{first}/1?"),
        url.replace(f"/{first}/0?", "/task_unknown/0?"),
        url.split("?")[0],
        url.split("?")[0] + "?expires=abc&sig=x",
        url.split("?")[0] + f"?expires={expires}&sig=" + "x" * 500,
        url.replace(sig, "%C3%A9" + sig[2:]),  # not ASCII: compared as bytes, not a 500
        url.replace(sig, "%ED%A0%80" + sig[3:]),  # not even UTF-8
    ]
    for bad in tampered:
        response = await fetch(relay, bad)
        assert response.status_code == 403, bad
        assert code(response) == "invalid_link", bad


async def test_retired_secret_ends_its_links(relay: Relay, files: FileHost) -> None:
    """A link signed with a secret that no longer signs (rotated, grace over) is 403."""
    url = await link_of(relay, await finished(relay, files))
    now = relay.clock.now()
    await relay.storage.add_signing_secret(relay.key_id, "whsec_new", now, now + 10)
    assert (await fetch(relay, url)).status_code == 200  # within the rotation's grace
    relay.clock.advance(11)
    assert code(await fetch(relay, url)) == "invalid_link"


async def test_poll_answers_conform_to_the_document(relay: Relay, files: FileHost) -> None:
    """Submit, poll, -22 and error answers match their documented GrsAI schemas."""
    document = document_for(RELAY_URL)
    path = "/v1/draw/nano-banana"
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1"}
    accepted = await relay.client.post(path, json=body, headers=relay.auth())
    conforms(document, path, "post", accepted)
    conforms(document, path, "post", await relay.client.post(path, json=body))
    task_id = await finished(relay, files)
    conforms(document, "/v1/draw/result", "post", await poll(relay, task_id))
    conforms(document, "/v1/draw/result", "post", await poll(relay, "task_nope"))
    signed = await fetch(relay, (await link_of(relay, task_id)) + "0")
    conforms(document, "/v1/files/{task_id}/{n}", "get", signed)


async def test_revoking_the_key_ends_its_links(relay: Relay, files: FileHost) -> None:
    """A link of a revoked key's task is refused like a forged one, though unexpired."""
    task_id = await finished(relay, files)
    url = await link_of(relay, task_id)
    assert (await fetch(relay, url)).status_code == 200
    assert await relay.storage.revoke_api_key(relay.key_id, relay.services.clock.now())
    refused = await fetch(relay, url)
    assert (refused.status_code, code(refused)) == (403, "invalid_link")
