"""GrsAI's documented client code runs unchanged against the simulator, for every model family.

The clients (tests/grsai_clients.py) are written the way GrsAI's documentation writes them; the
simulator is a real server on 127.0.0.1. Models whose result URL GrsAI puts at the top level
(sora-image, gpt-image-1.5, flux, the fast Veo models) must carry it in both places, since GrsAI's
own stream example reads the top-level `url`, `width`, `height` while its poll example reads
`data.results[i].url` for the same model.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests import grsai_clients as grsai
from tests.e2e.harness import UPSTREAM_KEY, SimulatorServer

pytestmark = [pytest.mark.e2e, pytest.mark.no_database]

# (path, model, whether GrsAI puts the result URL at the top level for it)
FAMILIES = [
    ("/v1/draw/completions", "sora-image", True),
    ("/v1/draw/completions", "gpt-image-1.5", True),
    ("/v1/draw/completions", "gpt-image-2", False),
    ("/v1/draw/nano-banana", "nano-banana-pro", False),
    ("/v1/draw/flux", "flux-kontext-pro", True),
    ("/v1/video/sora-video", "sora-2", False),
    ("/v1/video/veo", "veo3.1-fast", True),
    ("/v1/video/veo", "veo3.1-pro", False),
]
FAMILY_IDS = [model for _, model, _ in FAMILIES]


@pytest.fixture(name="grsai_url", scope="module")
def _grsai_url() -> Iterator[str]:
    """The simulator as a real server (fast steps), shared by this module's tests."""
    sim = SimulatorServer(SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.02)).start()
    yield sim.url
    sim.stop()


@pytest.fixture(name="receiver", scope="module")
def _receiver() -> Iterator[grsai.CallbackReceiver]:
    """A GrsAI user's webHook endpoint on loopback."""
    receiver = grsai.CallbackReceiver()
    yield receiver
    receiver.close()


def payload(model: str) -> grsai.JSON:
    """A plain submission, as GrsAI's examples make it."""
    return {"model": model, "prompt": "a lighthouse at dusk", "shutProgress": False}


def check_result(task: grsai.JSON, model: str, top_level: bool) -> None:
    """The task succeeded, its result downloads, and top-level models carry both forms."""
    assert task["status"] == "succeeded", task
    url, width, height = grsai.first_result(task)
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200
    video = model.startswith(("sora-2", "veo"))
    assert downloaded.headers["content-type"] == ("video/mp4" if video else "image/png")
    assert task["results"][0]["url"] == url
    if top_level:
        assert task["url"] == url
        if not video:
            assert (task["width"], task["height"]) == (width, height)
            assert min(width or 0, height or 0) > 0


@pytest.mark.parametrize(("path", "model", "top_level"), FAMILIES, ids=FAMILY_IDS)
def test_stream_client_reads_the_last_data_line(
    grsai_url: str, path: str, model: str, top_level: bool
) -> None:
    """The documented stream reader takes the result from the last `data:` line."""
    task = grsai.stream_task(grsai_url, UPSTREAM_KEY, path, payload(model))
    check_result(task, model, top_level)


@pytest.mark.parametrize(("path", "model", "top_level"), FAMILIES, ids=FAMILY_IDS)
def test_webhook_client_receives_the_final_callback(
    grsai_url: str, receiver: grsai.CallbackReceiver, path: str, model: str, top_level: bool
) -> None:
    """A `webHook` URL gets the task object POSTed, ending with the final one."""
    task_id = grsai.submit(grsai_url, UPSTREAM_KEY, path, payload(model), receiver.url)
    task = receiver.final(task_id)
    check_result(task, model, top_level)


@pytest.mark.parametrize(("path", "model", "top_level"), FAMILIES, ids=FAMILY_IDS)
def test_poll_client_reads_data_results(
    grsai_url: str, path: str, model: str, top_level: bool
) -> None:
    """`webHook: "-1"` then polling `/v1/draw/result` ends with `data.results[].url`."""
    task_id = grsai.submit(grsai_url, UPSTREAM_KEY, path, payload(model), "-1")
    data = grsai.poll_task(grsai_url, UPSTREAM_KEY, task_id, interval=0.05)
    check_result(data, model, top_level)
    for url in grsai.result_urls(data):
        assert httpx.get(url).status_code == 200
