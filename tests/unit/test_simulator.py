"""The GrsAI simulator: modes, shapes, files, auth and admin endpoints, driven in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service.simulator import Simulator, SimulatorConfig, create_simulator_app
from service.simulator.catalog import submit_paths
from tests.doubles import ManualClock

JSON = dict[str, Any]
AUTH = {"Authorization": "Bearer sk-test"}
HOOK = "http://receiver.test/hook"
TERMINAL = {"succeeded", "failed", "violation"}
TASK_ID = re.compile(r"^\d+-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def fast_config(**changes: Any) -> SimulatorConfig:
    """A config with tiny waits, for tests."""
    base: JSON = {"step_interval": 0.005, "callback_backoff": 0.001, "late_delay": 0.01}
    return SimulatorConfig(**{**base, **changes})


@dataclass
class Receiver:
    """A fake webhook receiver behind `httpx.MockTransport`: records bodies, answers as told."""

    answers: list[int | None] = field(default_factory=list)  # None: refuse the connection
    bodies: list[JSON] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    status_at_receipt: list[str] = field(default_factory=list)
    sim: Simulator | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Record one callback POST."""
        answer = self.answers.pop(0) if self.answers else 200
        if answer is None:
            raise httpx.ConnectError("refused", request=request)
        body: JSON = json.loads(request.content)
        self.bodies.append(body)
        self.raws.append(request.content)
        self.times.append(time.monotonic())
        if self.sim is not None:
            self.status_at_receipt.append(self.sim.tasks[body["id"]].status)
        return httpx.Response(answer, json={"code": 0, "msg": "success"})


@dataclass
class Harness:
    """One simulator app with a client, a manual clock and a callback receiver."""

    app: Starlette
    client: httpx.AsyncClient
    clock: ManualClock
    receiver: Receiver

    @property
    def sim(self) -> Simulator:
        """The app's simulator."""
        sim: Simulator = self.app.state.simulator
        return sim

    async def submit(
        self, path: str, model: str, prompt: str = "a red fox", **fields: Any
    ) -> httpx.Response:
        """POST a submit call."""
        return await self.client.post(path, json={"model": model, "prompt": prompt, **fields})

    async def submit_id(
        self, path: str, model: str, prompt: str = "a red fox", **fields: Any
    ) -> str:
        """Submit (poll mode unless `webHook` is given) and return the task id."""
        fields.setdefault("webHook", "-1")
        answer = (await self.submit(path, model, prompt, **fields)).json()
        assert answer["code"] == 0, answer
        task_id: str = answer["data"]["id"]
        return task_id

    async def poll(self, task_id: str) -> JSON:
        """POST /v1/draw/result and return the whole answer."""
        answer: JSON = (await self.client.post("/v1/draw/result", json={"id": task_id})).json()
        return answer

    async def poll_until_final(self, task_id: str) -> JSON:
        """Poll until the task is terminal and return the task object."""
        for _ in range(500):
            answer = await self.poll(task_id)
            if answer["code"] == 0 and answer["data"]["status"] in TERMINAL:
                task: JSON = answer["data"]
                return task
            await asyncio.sleep(0.005)
        raise AssertionError(f"task {task_id} never finished")

    async def report(self, task_id: str) -> JSON:
        """GET /_sim/tasks/{id}."""
        report: JSON = (await self.client.get(f"/_sim/tasks/{task_id}")).json()
        return report

    async def get_file(self, url: str) -> httpx.Response:
        """Fetch a result URL from the simulator."""
        return await self.client.get(httpx.URL(url).path)


@contextlib.asynccontextmanager
async def simulated(config: SimulatorConfig | None = None, seed: int = 7) -> AsyncIterator[Harness]:
    """Run a simulator app (with its lifespan) and a client for it."""
    clock, receiver = ManualClock(), Receiver()
    app = create_simulator_app(
        config or fast_config(),
        clock=clock,
        transport=httpx.MockTransport(receiver.handle),
        seed=seed,
    )
    receiver.sim = app.state.simulator
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://sim.test", headers=AUTH) as client,
    ):
        yield Harness(app, client, clock, receiver)


@pytest.fixture(name="h")
async def _h() -> AsyncIterator[Harness]:
    async with simulated() as h:
        yield h


def png_size(data: bytes) -> tuple[int, int]:
    """Check a PNG's structure (signature, chunk CRCs, pixel data) and return its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    assert next(iter(chunks)) == b"IHDR"
    assert b"IEND" in chunks
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == (1 + 3 * width) * height
    return width, height


def _top_level(task: JSON) -> list[str]:
    assert task["url"].endswith(".png")
    assert (task["width"], task["height"]) == (64, 48)
    assert task["results"] == [{"url": task["url"], "width": 64, "height": 48}]
    return [task["url"]]


def _flux(task: JSON) -> list[str]:
    assert "fail_reason" in task
    assert "failure_reason" not in task
    return _top_level(task)


def _items(*keys: str, ext: str) -> Callable[[JSON], list[str]]:
    def check(task: JSON) -> list[str]:
        assert len(task["results"]) == 1
        item = task["results"][0]
        assert set(item) == {"url", *keys}
        assert item["url"].endswith(ext)
        return [item["url"]]

    return check


def _veo_fast(task: JSON) -> list[str]:
    assert task["url"].endswith(".mp4")
    assert task["results"] == [{"url": task["url"]}]
    return [task["url"]]


FAMILIES: list[tuple[str, str, Callable[[JSON], list[str]]]] = [
    ("/v1/draw/completions", "sora-image", _top_level),
    ("/v1/draw/completions", "gpt-image-1.5", _top_level),
    ("/v1/draw/completions", "gpt-image-2", _items("width", "height", ext=".png")),
    ("/v1/draw/completions", "gpt-image-2-vip", _items("width", "height", ext=".png")),
    ("/v1/draw/nano-banana", "nano-banana-pro", _items("content", ext=".png")),
    ("/v1/draw/flux", "flux-kontext-pro", _flux),
    ("/v1/video/sora-video", "sora-2", _items("pid", ext=".mp4")),
    ("/v1/video/veo", "veo3.1-fast", _veo_fast),
    ("/v1/video/veo", "veo3.1-pro", _items(ext=".mp4")),
]


@pytest.mark.parametrize(("path", "model", "check"), FAMILIES)
async def test_family_end_to_end_in_poll_mode(
    h: Harness, path: str, model: str, check: Callable[[JSON], list[str]]
) -> None:
    """Each model family runs to success and shows its own result shape and a served file."""
    task_id = await h.submit_id(path, model)
    assert TASK_ID.match(task_id)
    task = await h.poll_until_final(task_id)
    assert task["id"] == task["task_id"] == task_id
    assert (task["status"], task["progress"]) == ("succeeded", 100)
    assert task["start_time"] == task["end_time"] == int(h.clock.now())
    for url in check(task):
        served = await h.get_file(url)
        assert served.status_code == 200
        expected = "image/png" if url.endswith(".png") else "video/mp4"
        assert served.headers["content-type"] == expected


@pytest.mark.parametrize(
    ("path", "model"), [(sp.path, m.name) for sp in submit_paths() for m in sp.models]
)
async def test_every_documented_model_is_accepted_on_its_path(
    h: Harness, path: str, model: str
) -> None:
    """Every model in the doc's table is accepted on its own path."""
    assert TASK_ID.match(await h.submit_id(path, model))


async def test_running_task_has_null_results_and_zero_end_time() -> None:
    """While running, a polled task has `results: null` and `end_time: 0`."""
    async with simulated(fast_config(step_interval=10)) as h:
        task_id = await h.submit_id("/v1/draw/completions", "gpt-image-2")
        task = (await h.poll(task_id))["data"]
        assert (task["status"], task["results"], task["end_time"]) == ("running", None, 0)


async def test_running_top_level_tasks_have_an_empty_url() -> None:
    """While running, sora-image has `url: ""` and `results: null`; flux has no `results` key."""
    async with simulated(fast_config(step_interval=10)) as h:
        sora = (await h.poll(await h.submit_id("/v1/draw/completions", "sora-image")))["data"]
        assert (sora["url"], sora["width"], sora["results"]) == ("", 0, None)
        flux = (await h.poll(await h.submit_id("/v1/draw/flux", "flux-pro-1.1")))["data"]
        assert flux["url"] == ""
        assert "results" not in flux


async def test_stream_mode_sends_data_lines_then_the_final() -> None:
    """Without webHook the submit answer is an event stream of progress lines then the final."""
    async with simulated(fast_config(progress_steps=3)) as h:
        answer = await h.submit("/v1/draw/nano-banana", "nano-banana")
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.text.endswith("\n\n")
        assert "[DONE]" not in answer.text
        frames = answer.text.split("\n\n")[:-1]
        assert all(f.startswith("data: ") and "\n" not in f for f in frames)
        tasks = [json.loads(f.removeprefix("data: ")) for f in frames]
        assert [t["status"] for t in tasks] == ["running"] * 3 + ["succeeded"]
        assert [t["progress"] for t in tasks] == [25, 50, 75, 100]
        assert len({t["id"] for t in tasks}) == 1


async def test_stream_mode_with_shut_progress_sends_only_the_final(h: Harness) -> None:
    """With shutProgress the stream holds a single final line."""
    answer = await h.submit("/v1/draw/flux", "flux-pro-1.1", shutProgress=True)
    frames = answer.text.split("\n\n")[:-1]
    assert len(frames) == 1
    assert json.loads(frames[0].removeprefix("data: "))["status"] == "succeeded"


async def test_callback_mode_posts_progress_then_final(h: Harness) -> None:
    """With a webHook URL the submit answers at once and flat task objects are POSTed."""
    answer = (await h.submit("/v1/draw/completions", "gpt-image-2", webHook=HOOK)).json()
    assert answer["code"] == 0
    assert answer["msg"] == "success"
    assert set(answer["data"]) == {"id"}
    await h.sim.wait_idle()
    bodies = h.receiver.bodies
    assert [b["status"] for b in bodies] == ["running"] * 3 + ["succeeded"]
    assert [b["progress"] for b in bodies] == [25, 50, 75, 100]
    assert all("code" not in b and b["id"] == answer["data"]["id"] for b in bodies)
    assert bodies[-1]["callback_url"] == HOOK
    assert h.receiver.status_at_receipt[:3] == ["running"] * 3


async def test_callback_mode_with_shut_progress_posts_only_the_final(h: Harness) -> None:
    """With shutProgress only the final callback is POSTed."""
    await h.submit_id("/v1/video/sora-video", "sora-2", webHook=HOOK, shutProgress=True)
    await h.sim.wait_idle()
    assert [b["status"] for b in h.receiver.bodies] == ["succeeded"]


async def test_poll_mode_sends_no_callbacks(h: Harness) -> None:
    """With webHook "-1" nothing is POSTed; the task is only pollable."""
    task_id = await h.submit_id("/v1/draw/flux", "flux-kontext-max")
    await h.sim.wait_idle()
    assert h.receiver.bodies == []
    assert (await h.poll(task_id))["data"]["status"] == "succeeded"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "sk-test"},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer "},
    ],
)
async def test_missing_or_bad_key_is_401(h: Harness, headers: dict[str, str]) -> None:
    """Submit and poll answer HTTP 401 with GrsAI's error body without a valid Bearer key."""
    h.client.headers.pop("Authorization")
    for path, body in [
        ("/v1/draw/completions", {"model": "sora-image", "prompt": "x"}),
        ("/v1/draw/result", {"id": "1-x"}),
    ]:
        answer = await h.client.post(path, json=body, headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"code": -1, "msg": "unauthorized", "data": None}


async def test_configured_key_must_match_exactly() -> None:
    """With api_key set, only that exact key is accepted."""
    async with simulated(fast_config(api_key="sk-right")) as h:
        wrong = await h.submit("/v1/draw/flux", "flux-pro-1.1", webHook="-1")
        assert wrong.status_code == 401
        h.client.headers["Authorization"] = "Bearer sk-right"
        assert (await h.submit("/v1/draw/flux", "flux-pro-1.1", webHook="-1")).json()["code"] == 0


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({"model": "nano-banana", "prompt": "x"}, "model nano-banana is not supported"),
        ({"prompt": "x"}, "model is required"),
        ({"model": "flux-pro-1.1"}, "prompt is required"),
        ({"model": "flux-pro-1.1", "prompt": "  "}, "prompt is required"),
        ({"model": "flux-pro-1.1", "prompt": "x", "webHook": "ftp://x"}, "webHook must be"),
        ({"model": "flux-pro-1.1", "prompt": "x", "shutProgress": "yes"}, "shutProgress must"),
        ([1, 2], "invalid json"),
    ],
)
async def test_invalid_submit_is_code_minus_one(h: Harness, body: Any, msg: str) -> None:
    """A wrong model, missing prompt or malformed field is a plain code -1 error with HTTP 200."""
    answer = await h.client.post("/v1/draw/flux", json=body)
    assert answer.status_code == 200
    data = answer.json()
    assert data["code"] == -1
    assert data["data"] is None
    assert data["msg"].startswith(msg)
    assert h.sim.stats.tasks == 0


async def test_unparsable_body_is_invalid_json(h: Harness) -> None:
    """A body that is not JSON is answered code -1 "invalid json"."""
    answer = await h.client.post("/v1/draw/flux", content=b"{nope")
    assert answer.json() == {"code": -1, "msg": "invalid json", "data": None}


async def test_unknown_id_polls_minus_22(h: Harness) -> None:
    """Polling an id that does not exist answers code -22."""
    assert await h.poll("16-00000000-0000-4000-8000-000000000000") == {
        "code": -22,
        "msg": "task not found",
        "data": None,
    }


async def test_png_is_valid_and_expires_after_url_ttl() -> None:
    """A result PNG is valid with the recorded size, and answers 404 once url_ttl has passed."""
    async with simulated(fast_config(url_ttl=100)) as h:
        task = await h.poll_until_final(await h.submit_id("/v1/draw/completions", "sora-image"))
        served = await h.get_file(task["url"])
        assert png_size(served.content) == (task["width"], task["height"]) == (64, 48)
        h.clock.advance(99)
        assert (await h.get_file(task["url"])).status_code == 200
        h.clock.advance(1)
        assert (await h.get_file(task["url"])).status_code == 404


async def test_aspect_ratio_sets_the_real_image_size(h: Harness) -> None:
    """The aspect ratio asked for is the real PNG's aspect, and the task records that size."""
    task_id = await h.submit_id("/v1/draw/nano-banana", "nano-banana-2", aspectRatio="16:9")
    task = await h.poll_until_final(task_id)
    served = await h.get_file(task["results"][0]["url"])
    assert png_size(served.content) == (64, 36)


async def test_two_variants_give_two_distinct_files(h: Harness) -> None:
    """`variants: 2` on completions gives two results with two different PNGs."""
    task_id = await h.submit_id("/v1/draw/completions", "gpt-image-2", variants=2)
    task = await h.poll_until_final(task_id)
    urls = [r["url"] for r in task["results"]]
    assert len(set(urls)) == 2
    files = [(await h.get_file(u)).content for u in urls]
    assert files[0] != files[1]


async def test_top_level_family_with_two_variants_lists_both(h: Harness) -> None:
    """For sora-image, two variants keep the first at the top level and list both in results."""
    task = await h.poll_until_final(
        await h.submit_id("/v1/draw/completions", "sora-image", variants=2)
    )
    assert task["url"] == task["results"][0]["url"]
    assert len(task["results"]) == 2


async def test_video_file_is_an_mp4(h: Harness) -> None:
    """A video result is served as video/mp4 starting with an ftyp box."""
    task = await h.poll_until_final(await h.submit_id("/v1/video/veo", "veo3.1-fast-4k"))
    served = await h.get_file(task["url"])
    assert served.content.startswith(b"\x00\x00\x00\x18ftypmp42")


async def test_files_of_unknown_or_running_tasks_are_404() -> None:
    """Files of unknown tasks, running tasks, bad indexes or wrong extensions answer 404."""
    async with simulated(fast_config(step_interval=10)) as h:
        running = await h.submit_id("/v1/draw/flux", "flux-pro-1.1")
        for path in ["/files/1-x/0.png", f"/files/{running}/0.png"]:
            assert (await h.client.get(path)).status_code == 404
    async with simulated() as h:
        done = (await h.poll_until_final(await h.submit_id("/v1/draw/flux", "flux-pro-1.1")))["id"]
        for name in ["1.png", "0.mp4", "x.png"]:
            assert (await h.client.get(f"/files/{done}/{name}")).status_code == 404


async def test_public_base_url_builds_result_urls() -> None:
    """With public_base_url set, result URLs start with it."""
    async with simulated(fast_config(public_base_url="https://cdn.example/sim/")) as h:
        task = await h.poll_until_final(await h.submit_id("/v1/draw/flux", "flux-pro-1.1"))
        assert task["url"].startswith("https://cdn.example/sim/files/")


async def test_stats_count_submits_tasks_callbacks_and_polls(h: Harness) -> None:
    """`/_sim/stats` counts submits (even rejected), tasks, callback POSTs and polls."""
    await h.submit_id("/v1/draw/completions", "gpt-image-2", webHook=HOOK, shutProgress=True)
    await h.submit("/v1/draw/completions", "gpt-image-2", "[sim:reject]", webHook="-1")
    await h.sim.wait_idle()
    await h.poll("1-nothing")
    stats = (await h.client.get("/_sim/stats")).json()
    assert stats == {
        "submits": 2,
        "tasks": 1,
        "callbacks_sent": 1,
        "polls": 1,
        "poll_faults": 0,
        "submit_faults": 0,
        "idle": True,
        "busy": 0,
    }


async def test_admin_report_shows_callbacks_with_receiver_status(h: Harness) -> None:
    """`/_sim/tasks/{id}` shows the task, its faults and each callback with the answer status."""
    h.receiver.answers = [503]
    task_id = await h.submit_id("/v1/draw/flux", "flux-pro-1.1", webHook=HOOK, shutProgress=True)
    await h.sim.wait_idle()
    report = await h.report(task_id)
    assert report["task"]["status"] == "succeeded"
    assert report["mode"] == "callback"
    assert [(c["attempt"], c["status"]) for c in report["callbacks"]] == [(1, 503), (2, 200)]
    assert report["callbacks"][0]["body"]["id"] == task_id
    assert (await h.client.get("/_sim/tasks/1-none")).status_code == 404


async def test_admin_complete_finishes_a_task_now() -> None:
    """`POST /_sim/tasks/{id}/complete` makes a slow task skip its waits."""
    async with simulated(fast_config(step_interval=30)) as h:
        task_id = await h.submit_id("/v1/draw/flux", "flux-pro-1.1")
        assert (await h.client.post(f"/_sim/tasks/{task_id}/complete")).status_code == 200
        await asyncio.wait_for(h.sim.wait_idle(), 5)
        assert (await h.poll(task_id))["data"]["status"] == "succeeded"


async def test_account_endpoints(h: Harness) -> None:
    """Credits answer for a valid key; model status is true for known models only."""
    credits = await h.client.post("/client/openapi/getAPIKeyCredits", json={"apiKey": "sk-a"})
    assert credits.json() == {"code": 0, "msg": "success", "data": {"credits": 100_000}}
    bad = await h.client.post("/client/openapi/getAPIKeyCredits", json={"apiKey": "x"})
    assert bad.json()["code"] == -1
    known = await h.client.get("/client/common/getModelStatus", params={"model": "sora-2"})
    assert known.json()["data"] == {"status": True, "error": ""}
    unknown = await h.client.get("/client/common/getModelStatus", params={"model": "dall-e"})
    assert unknown.json()["data"]["status"] is False


async def test_shutdown_cancels_running_tasks_and_ends_streams() -> None:
    """Leaving the lifespan cancels unfinished tasks and closes their streams."""
    async with simulated(fast_config(step_interval=30)) as h:
        await h.submit_id("/v1/draw/flux", "flux-pro-1.1", webHook=HOOK)
        task = next(iter(h.sim.tasks.values()))
        sim = h.sim
    assert task.status == "running"
    assert sim.idle


async def test_same_seed_gives_same_task_ids() -> None:
    """A seed makes task ids reproducible."""
    ids = []
    for _ in range(2):
        async with simulated(seed=42) as h:
            ids.append(await h.submit_id("/v1/draw/flux", "flux-pro-1.1"))
    assert ids[0] == ids[1]
