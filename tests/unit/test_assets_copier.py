"""The copy worker: queueing on success, leases, retry delays, final failure, concurrency.

Tasks reach `succeeded` through the relay's real callback path (which queues the copies in the
same transaction); the `Copier` under test shares that relay's storage and `ManualClock` and
downloads through its own `FileHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.clock import rfc3339
from service.domain.observation import Observation, ResultFile
from service.domain.records import Asset, Task
from service.domain.results import result_path, updated_entry
from service.domain.transitions import decide, result_entries
from service.files.download import Downloader
from service.files.store import LocalAssetStore
from service.jobs.copier import Copier
from service.upstream.netguard import UrlGuard
from tests.unit.conftest import RELAY_URL, Relay
from tests.unit.test_assets_download import (
    FILES,
    URL,
    FileHost,
    Responder,
    download_client,
    public_dns,
)
from tests.unit.test_assets_netguard import FakeDns
from tests.unit.test_assets_sniff import png

JSON = dict[str, Any]
DELAYS = (5.0, 30.0)
CONCURRENCY = 2


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


@pytest.fixture(name="dns")
def _dns() -> FakeDns:
    return public_dns()


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path / "copies")


@pytest.fixture(name="copier")
async def _copier(
    relay: Relay, files: FileHost, dns: FakeDns, store: LocalAssetStore
) -> AsyncIterator[Copier]:
    async with contextlib.aclosing(download_client(files)) as http:
        downloader = Downloader(http, store, UrlGuard(resolver=dns), max_bytes=1 << 20, timeout=5.0)
        copier = Copier(
            relay.storage,
            downloader,
            relay.clock,
            concurrency=CONCURRENCY,
            tick=0.01,
            retry_delays=DELAYS,
            lease=60.0,
            rng=random.Random(7),
        )
        yield copier
        await copier.stop(grace=1.0)


async def succeeded(relay: Relay, *urls: str) -> str:
    """Submit a task and complete it by a (verified) callback with `urls`; return its id."""
    created = await relay.created()
    answer = relay.grsai.succeed(created["upstream_id"], *urls)
    response = await relay.callback(relay.grsai.token(), answer)
    assert response.status_code == 200, response.text
    task_id: str = created["id"]
    return task_id


async def drain(copier: Copier) -> None:
    """Wait for every copy the copier has started (its running set is the only handle)."""
    await copier.wait_idle()


async def round_trip(copier: Copier) -> int:
    """One `run_once` and the copies it started; return how many it started."""
    started = await copier.run_once()
    await drain(copier)
    return started


async def asset(relay: Relay, task_id: str, n: int = 0) -> Asset:
    """The asset row (it must exist)."""
    found = await relay.storage.asset(task_id, n)
    assert found is not None
    return found


async def entry(relay: Relay, task_id: str, n: int = 0) -> JSON:
    """Result entry `n` as the API shows it."""
    response = await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())
    assert response.status_code == 200
    found: JSON = response.json()["results"][n]
    return found


async def test_success_queues_copies_and_hides_upstream_urls(relay: Relay) -> None:
    """A success queues one pending copy per result; no entry shows a URL before its copy."""
    second = f"https://{FILES}/out/b.png"
    task_id = await succeeded(relay, URL, second)
    jobs = await relay.storage.assets_of(task_id)
    assert [(j.n, j.upstream_url, j.status, j.attempts) for j in jobs] == [
        (0, URL, "pending", 0),
        (1, second, "pending", 0),
    ]
    assert all(j.next_attempt_at == 0.0 for j in jobs)  # due at once
    for n, upstream in enumerate((URL, second)):
        shown = await entry(relay, task_id, n)
        assert shown["url"] is None
        assert shown["upstream_url"] == upstream
        assert shown["asset"] == {"status": "pending", "error": None}


async def test_duplicate_success_does_not_queue_again(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """A repeated success callback leaves the stored copy alone and adds no job."""
    files.serve(URL, png())
    task_id = await succeeded(relay, URL)
    assert await round_trip(copier) == 1
    upstream_id = (await relay.task(task_id)).upstream_id
    assert upstream_id is not None
    response = await relay.callback(relay.grsai.token(), relay.grsai.tasks[upstream_id])
    assert response.status_code == 200
    jobs = await relay.storage.assets_of(task_id)
    assert [(j.status, j.attempts) for j in jobs] == [("stored", 1)]
    assert (await entry(relay, task_id))["asset"]["status"] == "stored"
    assert await copier.run_once() == 0


async def test_queued_copy_is_stored_and_shown(
    relay: Relay, copier: Copier, files: FileHost, store: LocalAssetStore
) -> None:
    """A due job is downloaded, and the task's entry points at our copy with its details."""
    body = png(6, 4)
    files.serve(URL, body)
    task_id = await succeeded(relay, URL)
    relay.clock.advance(1.5)
    assert await round_trip(copier) == 1
    sha = hashlib.sha256(body).hexdigest()
    job = await asset(relay, task_id)
    assert (job.status, job.attempts, job.error, job.next_attempt_at) == ("stored", 1, None, None)
    assert (job.sha256, job.bytes, job.content_type) == (sha, len(body), "image/png")
    assert (job.width, job.height, job.stored_at) == (6, 4, relay.clock.now())
    assert store.path(sha).read_bytes() == body
    stored = (await relay.task(task_id)).results[0]
    assert stored["url"] == f"/v1/tasks/{task_id}/results/0"  # stored as a path
    shown = await entry(relay, task_id)
    assert shown == {
        "url": f"{RELAY_URL}/v1/tasks/{task_id}/results/0",  # the API prefixes PUBLIC_BASE_URL
        "upstream_url": URL,
        "content_type": "image/png",
        "bytes": len(body),
        "sha256": sha,
        "width": 6,
        "height": 4,
        "stored_at": rfc3339(relay.clock.now()),  # stored in epoch seconds, served RFC 3339
        "asset": {"status": "stored", "error": None, "attempts": 1},
    }
    assert await copier.run_once() == 0  # nothing left to do


async def test_retryable_failure_waits_for_its_delay(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """A retryable failure keeps the job pending, with its error, due after delay ±20%."""
    files.serve(URL, b"busy", 503)
    task_id = await succeeded(relay, URL)
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    now = relay.clock.now()
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.error == "result URL answered HTTP 503"
    assert job.next_attempt_at is not None
    assert now + DELAYS[0] * 0.8 <= job.next_attempt_at <= now + DELAYS[0] * 1.2
    shown = await entry(relay, task_id)
    assert shown["url"] is None
    assert shown["asset"] == {"status": "pending", "error": job.error, "attempts": 1}

    relay.clock.advance(job.next_attempt_at - now - 0.01)
    assert await copier.run_once() == 0  # not due yet
    relay.clock.advance(0.01)
    files.serve(URL, png())
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    assert (job.status, job.attempts, job.error) == ("stored", 2, None)


async def test_retries_exhausted_fail_with_the_reason_shown(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """After every retry delay is used the copy fails; the entry says why and shows no URL."""
    files.serve(URL, b"", 500)
    task_id = await succeeded(relay, URL)
    for attempt, delay in enumerate(DELAYS, start=1):
        before = relay.clock.now()
        assert await round_trip(copier) == 1
        job = await asset(relay, task_id)
        assert (job.status, job.attempts) == ("pending", attempt)
        assert job.next_attempt_at is not None
        assert before + delay * 0.8 <= job.next_attempt_at <= before + delay * 1.2
        relay.clock.advance(job.next_attempt_at - before)
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    assert (job.status, job.attempts, job.next_attempt_at) == ("failed", 3, None)
    assert job.error == "result URL answered HTTP 500"
    assert job.sha256 is None
    shown = await entry(relay, task_id)
    assert shown["url"] is None
    assert shown["sha256"] is None
    assert shown["asset"] == {"status": "failed", "error": job.error, "attempts": 3}
    relay.clock.advance(86400)
    assert await copier.run_once() == 0  # a failed copy is never tried again
    assert len(files.seen) == 3


async def test_permanent_failure_fails_at_once(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """A non-retryable failure (403) fails on the first attempt."""
    files.serve(URL, b"forbidden", 403)
    task_id = await succeeded(relay, URL)
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    assert (job.status, job.attempts, job.next_attempt_at) == ("failed", 1, None)
    assert job.error == "result URL answered HTTP 403"
    assert (await entry(relay, task_id))["asset"]["status"] == "failed"


async def test_refused_url_fails_at_once(relay: Relay, copier: Copier, files: FileHost) -> None:
    """A result URL on a private address fails for good, without a request."""
    task_id = await succeeded(relay, "https://internal.example/a.png")
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error.startswith("refused URL: host 'internal.example'")
    assert files.seen == []


async def test_unexpected_error_is_retried_not_left_leased(
    relay: Relay, copier: Copier, dns: FakeDns
) -> None:
    """A bug while copying is recorded as a retryable internal error, not lost."""
    dns.table["odd.example"] = ["not-an-address"]  # makes the guard raise ValueError
    task_id = await succeeded(relay, "https://odd.example/a.png")
    assert await round_trip(copier) == 1
    job = await asset(relay, task_id)
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.error is not None
    assert job.error.startswith("internal error: ValueError")
    assert job.next_attempt_at is not None
    assert job.next_attempt_at <= relay.clock.now() + DELAYS[0] * 1.2


async def test_claimed_job_comes_back_after_its_lease(relay: Relay, copier: Copier) -> None:
    """A job claimed by a worker that died is due again when its lease ends."""
    task_id = await succeeded(relay, URL)
    now = relay.clock.now()
    (claimed,) = await relay.storage.claim_assets(now, 10, now + 60.0)
    assert claimed.task_id == task_id
    assert await relay.storage.claim_assets(now, 10, now + 60.0) == []
    relay.clock.advance(59.0)
    assert await copier.run_once() == 0
    relay.clock.advance(1.0)
    assert await copier.run_once() == 1
    await drain(copier)


async def test_settled_copies_are_announced(
    relay: Relay, files: FileHost, dns: FakeDns, store: LocalAssetStore
) -> None:
    """`on_settled` fires when a copy is stored or fails for good, not when it will retry."""
    settled: list[str] = []
    files.serve(URL, png())
    files.serve(f"https://{FILES}/busy.png", b"", 503)
    async with contextlib.aclosing(download_client(files)) as http:
        downloader = Downloader(http, store, UrlGuard(resolver=dns), max_bytes=4096, timeout=5.0)
        copier = Copier(
            relay.storage, downloader, relay.clock, concurrency=1, tick=1.0,
            retry_delays=[], lease=60.0, on_settled=lambda: settled.append("settled"),
        )  # fmt: skip
        stored = await succeeded(relay, URL)
        (job,) = await relay.storage.claim_assets(relay.clock.now(), 10, relay.clock.now() + 60)
        await copier.copy(job)
        assert (await asset(relay, stored)).status == "stored"
        assert settled == ["settled"]
        retried = Copier(
            relay.storage, downloader, relay.clock, concurrency=1, tick=1.0,
            retry_delays=[5.0], lease=60.0, on_settled=lambda: settled.append("retried"),
        )  # fmt: skip
        busy = await succeeded(relay, f"https://{FILES}/busy.png")
        (job,) = await relay.storage.claim_assets(relay.clock.now(), 10, relay.clock.now() + 60)
        await retried.copy(job)
        assert (await asset(relay, busy)).status == "pending"
        assert settled == ["settled"]


async def test_final_event_after_a_failed_copy_is_stamped_now(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """When the last copy fails, the client's final event is queued at the current time."""
    files.serve(URL, b"", 403)
    created = await relay.created(callback_url="https://client.example/hook")
    task_id: str = created["id"]
    answer = relay.grsai.succeed(created["upstream_id"], URL)
    assert (await relay.callback(relay.grsai.token(), answer)).status_code == 200
    assert await relay.storage.deliveries_of(task_id) == []  # waits for the copy to settle
    relay.clock.advance(10.0)
    assert await round_trip(copier) == 1
    ((delivery, _),) = await relay.storage.deliveries_of(task_id)
    assert delivery.event_type == "task.succeeded"
    assert delivery.event_at == relay.clock.now()
    assert delivery.next_attempt_at == relay.clock.now()


async def test_final_event_after_a_stored_copy_is_stamped_now(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """When the last copy is stored, the client's final event is queued at that time."""
    files.serve(URL, png())
    created = await relay.created(callback_url="https://client.example/hook")
    answer = relay.grsai.succeed(created["upstream_id"], URL)
    assert (await relay.callback(relay.grsai.token(), answer)).status_code == 200
    relay.clock.advance(10.0)
    assert await round_trip(copier) == 1
    ((delivery, _),) = await relay.storage.deliveries_of(created["id"])
    assert (delivery.event_at, delivery.status) == (relay.clock.now(), "pending")


async def test_concurrency_limit_is_respected(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """run_once never has more than `concurrency` copies running; the rest wait their turn."""
    gate, both = asyncio.Event(), asyncio.Event()
    active = peak = 0
    urls = [f"https://{FILES}/out/{n}.png" for n in range(5)]

    def slow(n: int) -> Responder:
        async def answer(request: httpx.Request) -> httpx.Response:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            if active == CONCURRENCY:
                both.set()
            try:
                await gate.wait()
                return httpx.Response(200, content=png(2, 2, seed=n))
            finally:
                active -= 1

        return answer

    for n, url in enumerate(urls):
        files.route(url, slow(n))
    task_id = await succeeded(relay, *urls)
    assert await copier.run_once() == CONCURRENCY
    await asyncio.wait_for(both.wait(), 1.0)
    assert await copier.run_once() == 0  # every slot is busy
    assert active == CONCURRENCY
    gate.set()
    await drain(copier)
    assert await round_trip(copier) == 2
    assert await round_trip(copier) == 1
    assert peak == CONCURRENCY
    assert [j.status for j in await relay.storage.assets_of(task_id)] == ["stored"] * 5


async def test_background_loop_copies_when_kicked(
    relay: Relay, copier: Copier, files: FileHost
) -> None:
    """The started loop copies a queued job after a kick, and stops when asked."""
    files.serve(URL, png())
    task_id = await succeeded(relay, URL)
    copier.start()
    assert copier.alive
    copier.kick()
    for _ in range(12000):  # a hang guard of 60 s
        if (await asset(relay, task_id)).status == "stored":
            break
        await asyncio.sleep(0.005)
    assert (await asset(relay, task_id)).status == "stored"
    await copier.stop(grace=1.0)
    assert not copier.alive


def running_task() -> Task:
    """A running task with a bound upstream id."""
    return Task(
        "t1", "k1", "nano-banana", "/v1/draw/nano-banana", "callback", {}, 1.0, 1.0,
        status="running", progress=50, upstream_id="u1",
    )  # fmt: skip


def success(*urls: str) -> Observation:
    """A succeeded observation with `urls` (GrsAI's sizes 10x20)."""
    return Observation("u1", "succeeded", 100, tuple(ResultFile(u, 10, 20) for u in urls))


def test_decide_with_copying_queues_copies_and_hides_urls() -> None:
    """With copying, a success queues every URL and its entries show no URL yet."""
    decision = decide(running_task(), success(URL, URL + "?2"), 9.0, copy_results=True)
    assert decision.outcome == "applied"
    assert decision.copies == (URL, URL + "?2")
    results = decision.changes["results"]
    assert [r["url"] for r in results] == [None, None]
    assert [r["upstream_url"] for r in results] == [URL, URL + "?2"]
    assert results[0]["asset"] == {"status": "pending", "error": None}
    assert (results[0]["width"], results[0]["height"]) == (10, 20)


def test_decide_without_copying_shows_upstream_urls() -> None:
    """Without copying nothing is queued and GrsAI's URL is shown as is."""
    decision = decide(running_task(), success(URL), 9.0)
    assert decision.copies == ()
    assert decision.changes["results"] == result_entries(success(URL), copy_results=False)
    assert decision.changes["results"][0]["url"] == URL
    assert decision.changes["results"][0]["asset"]["status"] == "not_copied"


def test_failure_and_progress_queue_nothing() -> None:
    """Only a success queues copies."""
    failed = Observation("u1", "failed", None, failure_reason="error")
    progress = Observation("u1", "running", 70)
    assert decide(running_task(), failed, 9.0, copy_results=True).copies == ()
    assert decide(running_task(), progress, 9.0, copy_results=True).copies == ()


def test_updated_entry_keeps_upstream_size_until_stored() -> None:
    """A pending or failed copy keeps GrsAI's width/height and shows no URL or hash."""
    base = result_entries(success(URL), copy_results=True)[0]
    failed = Asset("t1", 0, URL, status="failed", attempts=6, error="gone", sha256="ab" * 32)
    shown = updated_entry(base, failed)
    assert (shown["url"], shown["sha256"], shown["bytes"]) == (None, None, None)
    assert (shown["width"], shown["height"]) == (10, 20)
    assert shown["asset"] == {"status": "failed", "error": "gone", "attempts": 6}
    stored = Asset("t1", 0, URL, status="stored", sha256="ab" * 32, width=64, height=32)
    assert updated_entry(base, stored)["url"] == result_path("t1", 0) == "/v1/tasks/t1/results/0"
    assert (updated_entry(base, stored)["width"], updated_entry(base, stored)["height"]) == (64, 32)
