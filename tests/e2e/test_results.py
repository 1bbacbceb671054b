"""End to end: result files are copied before GrsAI's URLs expire and served from our storage."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer

URL_TTL = 1.5


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator whose result URLs expire after 1.5 s."""
    sim = SimulatorServer(
        SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.05, url_ttl=URL_TTL)
    ).start()
    yield sim
    sim.stop()


async def finished(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, model: str, prompt: str
) -> dict[str, Any]:
    """Submit, then wait until the task is final and no copy is pending."""
    response = await client.post(
        f"{relay.url}/v1/tasks", json={"model": model, "prompt": prompt}, headers=auth(key)
    )
    assert response.status_code == 202, response.text
    return await wait_for_task(client, relay, key, response.json()["id"], within=60)


async def expired(client: httpx.AsyncClient, url: str) -> None:
    """Wait until GrsAI's (the simulator's) URL no longer serves the file."""
    for _ in range(200):
        if (await client.get(url)).status_code == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never expired")


def vm_peak_kib(relay: RelayProcess) -> int:
    """The relay process's peak resident memory (VmHWM), in KiB."""
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_results_are_served_after_grsai_urls_expired(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """A stored PNG is served with type, length, ETag and caching once GrsAI's URL is gone."""
    key = relay.create_key("a")
    task = await finished(client, relay, key, "gpt-image-2", "two please")
    entry = task["results"][0]
    assert entry["asset"]["status"] == "stored"
    assert entry["url"] == f"{relay.url}/v1/tasks/{task['id']}/results/0"
    await expired(client, entry["upstream_url"])
    response = await client.get(entry["url"], headers=auth(key))
    assert response.status_code == 200
    body = response.content
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{entry["sha256"]}"'
    assert int(response.headers["content-length"]) == entry["bytes"] == len(body)
    assert "immutable" in response.headers["cache-control"]
    assert (entry["width"], entry["height"]) == (64, 48)
    again = await client.get(
        entry["url"], headers={**auth(key), "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    other = relay.create_key("b")
    assert (await client.get(entry["url"], headers=auth(other))).status_code == 404


async def test_corrupted_download_is_retried_and_never_stored_as_good(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """A corrupted first download is refused by its CRC check and the retry stores the real file."""
    key = relay.create_key("a")
    task = await finished(client, relay, key, "nano-banana", "x [sim:corrupt=1]")
    entry = task["results"][0]
    assert entry["asset"]["status"] == "stored"
    assert entry["asset"]["attempts"] == 2
    stored = await client.get(entry["url"], headers=auth(key))
    good = await client.get(entry["upstream_url"])  # the simulator serves it intact now
    assert stored.content == good.content


async def test_truncated_download_is_retried(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """A download cut short is retried; only the complete file is stored."""
    key = relay.create_key("a")
    task = await finished(client, relay, key, "nano-banana", "x [sim:truncate=1]")
    entry = task["results"][0]
    assert (entry["asset"]["status"], entry["asset"]["attempts"]) == ("stored", 2)
    stored = await client.get(entry["url"], headers=auth(key))
    assert hashlib.sha256(stored.content).hexdigest() == entry["sha256"]


async def test_always_corrupt_ends_failed_and_says_why(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """When every attempt is corrupt, the copy fails with its reason and is never served."""
    relay = start_relay(ASSET_RETRY_DELAYS="0.05,0.05")
    key = relay.create_key("a")
    task = await finished(client, relay, key, "nano-banana", "x [sim:corrupt=50]")
    entry = task["results"][0]
    assert entry["asset"]["status"] == "failed"
    assert "CRC" in entry["asset"]["error"]
    assert entry["url"] is None
    assert entry["sha256"] is None
    served = await client.get(f"{relay.url}/v1/tasks/{task['id']}/results/0", headers=auth(key))
    assert served.status_code == 404
    assert served.json()["error"]["code"] == "asset_failed"


async def test_private_result_urls_are_refused_without_the_allow_list(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """With no allowed network, a loopback result URL is refused, not fetched."""
    relay = start_relay(FETCH_ALLOW_NETWORKS="")
    key = relay.create_key("a")
    task = await finished(client, relay, key, "nano-banana", "x")
    entry = task["results"][0]
    assert entry["asset"]["status"] == "failed"
    assert "non-public address" in entry["asset"]["error"]
    assert entry["asset"]["attempts"] == 1  # a refusal is final, not retried


@pytest.mark.timeout(180)
async def test_fifty_megabyte_video_is_served_with_ranges_in_bounded_memory(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """A 50 MiB video is copied and served (whole and by ranges) without holding it in memory."""
    key = relay.create_key("a")
    before = vm_peak_kib(relay)
    task = await finished(client, relay, key, "sora-2", "x [sim:videomb=50]")
    entry = task["results"][0]
    assert entry["asset"]["status"] == "stored", entry
    assert entry["bytes"] >= 50 * 1024 * 1024
    assert entry["content_type"] == "video/mp4"
    assert (entry["width"], entry["height"]) == (64, 36)  # read from the tkhd box
    url = entry["url"]
    first = await client.get(url, headers={**auth(key), "Range": "bytes=0-1023"})
    assert first.status_code == 206
    assert first.headers["content-range"] == f"bytes 0-1023/{entry['bytes']}"
    assert len(first.content) == 1024
    assert first.content[4:8] == b"ftyp"
    tail = await client.get(url, headers={**auth(key), "Range": "bytes=-100"})
    assert (tail.status_code, len(tail.content)) == (206, 100)
    beyond = await client.get(url, headers={**auth(key), "Range": f"bytes={entry['bytes']}-"})
    assert beyond.status_code == 416
    digest, size = hashlib.sha256(), 0
    async with client.stream("GET", url, headers=auth(key)) as whole:
        assert whole.status_code == 200
        async for chunk in whole.aiter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert (size, digest.hexdigest()) == (entry["bytes"], entry["sha256"])
    grown_mib = (vm_peak_kib(relay) - before) / 1024
    print(f"\npeak RSS grew {grown_mib:.1f} MiB copying and serving a 50 MiB video")
    assert grown_mib < 40  # streamed: far less than the file itself
