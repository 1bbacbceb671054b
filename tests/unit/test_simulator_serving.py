"""Serving the simulator for real with uvicorn on 127.0.0.1, and its command-line config."""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
import pytest
from starlette.types import Message

from service.simulator import SimulatorConfig, simulator_server
from service.simulator.media import image_size, mp4_bytes
from tests.unit.test_simulator import AUTH, png_size


async def test_uvicorn_serves_the_simulator_on_loopback() -> None:
    """The uvicorn server behind `run_simulator` answers real HTTP: stream, poll and files."""
    config = SimulatorConfig(step_interval=0.01, progress_steps=2)
    server = simulator_server("127.0.0.1", 0, config, log_level="warning")
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.01)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=5) as client:
            stream = await client.post(
                "/v1/draw/flux", json={"model": "flux-pro-1.1", "prompt": "x"}
            )
            frames = [json.loads(f[6:]) for f in stream.text.split("\n\n") if f]
            assert [f["progress"] for f in frames] == [33, 67, 100]
            url = frames[-1]["url"]
            assert url.startswith(base + "/files/")
            assert png_size((await client.get(url)).content) == (64, 48)
            submit = {"model": "sora-2", "prompt": "x", "webHook": "-1"}
            task_id = (await client.post("/v1/video/sora-video", json=submit)).json()["data"]["id"]
            for _ in range(500):
                data = (await client.post("/v1/draw/result", json={"id": task_id})).json()["data"]
                if data["status"] == "succeeded":
                    break
                await asyncio.sleep(0.01)
            assert data["results"][0]["pid"].startswith("s_")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


def test_cli_arguments_build_a_config() -> None:
    """`add_cli_arguments` + `from_cli` turn flags into a config; absent flags keep defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    SimulatorConfig.add_cli_arguments(parser)
    ns = parser.parse_args(
        ["--api-key", "sk-x", "--step-interval", "0.5", "--fail-rate", "0.25", "--url-ttl", "60"]
    )
    config = SimulatorConfig.from_cli(ns)
    assert config == SimulatorConfig(api_key="sk-x", step_interval=0.5, fail_rate=0.25, url_ttl=60)
    assert ns.port == 8000
    assert SimulatorConfig.from_cli(parser.parse_args([])) == SimulatorConfig()


def test_cli_help_lists_the_fault_rates() -> None:
    """The help text lists every option, e.g. --reorder-rate and --poll-miss-seconds."""
    parser = argparse.ArgumentParser()
    SimulatorConfig.add_cli_arguments(parser)
    text = parser.format_help()
    for flag in ["--api-key", "--reorder-rate", "--poll-miss-seconds", "--public-base-url"]:
        assert flag in text


def test_cli_rejects_a_bad_rate() -> None:
    """A rate flag outside 0..1 fails when the config is built."""
    parser = argparse.ArgumentParser()
    SimulatorConfig.add_cli_arguments(parser)
    with pytest.raises(ValueError, match="drop_rate"):
        SimulatorConfig.from_cli(parser.parse_args(["--drop-rate", "2"]))


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        (None, (64, 48)),
        ("1:1", (64, 64)),
        ("9:16", (36, 64)),
        ("1024x1536", (43, 64)),
        ("auto", (64, 48)),
    ],
)
def test_image_size_follows_the_aspect(aspect: str | None, size: tuple[int, int]) -> None:
    """Image sizes keep the asked aspect within 64 pixels; unknown aspects give 64x48."""
    assert image_size(aspect) == size


def test_mp4_starts_with_an_ftyp_box() -> None:
    """The placeholder video begins with a 24-byte ftyp box of brand mp42."""
    assert mp4_bytes("t").startswith(b"\x00\x00\x00\x18ftypmp42")


async def test_a_submit_whose_sender_hangs_up_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A relay killed while sending a submit leaves no 500 and no error log in the simulator."""
    from tests.unit.test_simulator import simulated

    async with simulated() as h:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/draw/nano-banana",
            "raw_path": b"/v1/draw/nano-banana",
            "query_string": b"",
            "headers": [(b"authorization", AUTH["Authorization"].encode())],
            "server": ("sim.test", 80),
            "client": ("127.0.0.1", 5000),
            "root_path": "",
        }
        await h.app(scope, receive, send)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
