"""The command line's relay client: the SSE reader, the progress display, `--param` parsing,
following a task through drops (httpx.MockTransport), and saving result files."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.client import ApiError, CommandFailed, RelayClient, RelayUnreachable
from service.cli.follow import follow
from service.cli.grammar import pair, parser
from service.cli.progress import Progress, bar, line
from service.cli.remote import Console, api_key, param_value, relay_url, submit, task_body
from service.cli.saving import extension, save_results
from service.cli.sse import SseEvent, SseParser
from service.settings import Settings

RELAY = "http://relay.test"
KEY = "grk_test"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def _task(status: str = "running", progress: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": "task_1", "status": status, "progress": progress, "results": [], **extra}


def _frame(task: dict[str, Any], event_id: str) -> bytes:
    return b"event: task\nid: %s\ndata: %s\n\n" % (event_id.encode(), json.dumps(task).encode())


async def _no_sleep(_: float) -> None:
    return None


def _feed(text: str) -> list[SseEvent]:
    sse = SseParser()
    return [e for raw in text.split("\n") if (e := sse.feed(raw)) is not None]


def test_sse_reader_joins_data_lines_and_keeps_the_last_id() -> None:
    """Data lines join with newlines; an event without an id keeps the last one seen."""
    events = _feed("id: a\nevent: task\ndata: 1\ndata: 2\n\ndata: 3\n\n")
    assert events == [SseEvent("task", "1\n2", "a"), SseEvent("message", "3", "a")]


def test_sse_reader_counts_heartbeats_and_skips_empty_events() -> None:
    """Comment lines (heartbeats) are counted, never dispatched; a blank line alone is nothing."""
    sse = SseParser()
    for raw in [": ping", "", ": ping", "", "retry: 1500", "id: x", ""]:
        assert sse.feed(raw) is None
    assert (sse.comments, sse.retry_ms, sse.last_id) == (2, 1500, "x")


def test_sse_reader_takes_crlf_and_values_without_a_space() -> None:
    """`data:x` and CRLF line ends read like `data: x` and LF."""
    sse = SseParser()
    assert sse.feed("data:x\r") is None
    assert sse.feed("\r") == SseEvent("message", "x", None)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2", 2),
        ("1.5", 1.5),
        ("true", True),
        ('["a","b"]', ["a", "b"]),
        ("16:9", "16:9"),
        ("hello world", "hello world"),
        ("", ""),
        ('"7"', "7"),
    ],
)
def test_param_values_are_json_when_they_parse(raw: str, value: Any) -> None:
    """`--param k=v`: numbers, booleans and lists decode as JSON; anything else stays text."""
    assert param_value(raw) == value


def test_params_and_metadata_build_the_body() -> None:
    """`--param` values decode, `--metadata` values stay text, `=` may appear in a value."""
    params = [pair("variants=2"), pair("aspectRatio=16:9"), pair("urls=[]")]
    body = task_body("m", "p", params, [pair("order=123"), pair("q=a=b")])
    assert body == {
        "model": "m",
        "prompt": "p",
        "variants": 2,
        "aspectRatio": "16:9",
        "urls": [],
        "metadata": {"order": "123", "q": "a=b"},
    }


@pytest.mark.parametrize(
    "params", [[("model", "x")], [("prompt", "x")], [("size", "1"), ("size", "2")]]
)
def test_params_that_clash_are_usage_errors(params: list[tuple[str, str]]) -> None:
    """A `--param` naming its own option, or given twice, is refused (exit 2)."""
    with pytest.raises(CommandFailed) as caught:
        task_body("m", "p", params, [])
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("arg", ["novalue", "=x"])
def test_a_param_without_name_and_value_is_a_usage_error(arg: str) -> None:
    """argparse refuses `--param` text that is not NAME=VALUE (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["submit", "--model", "m", "--prompt", "p", "--param", arg])
    assert caught.value.code == 2


def test_url_and_key_come_from_flags_then_environment_then_settings(tmp_path: Path) -> None:
    """--url/--key win over RELAY_URL/RELAY_API_KEY; without either the port and the demo key."""
    db = tmp_path / "r.db"
    settings = Settings(database_url=f"sqlite:///{db}", port=9123, grsai_api_key=None)
    env = {"RELAY_URL": "http://env:1/", "RELAY_API_KEY": "grk_env"}
    assert relay_url("http://flag:2", env, settings) == "http://flag:2"
    assert relay_url(None, env, settings) == "http://env:1"
    assert relay_url(None, {}, settings) == "http://127.0.0.1:9123"
    assert api_key("grk_flag", env, settings) == "grk_flag"
    assert api_key(None, env, settings) == "grk_env"
    with pytest.raises(CommandFailed, match="demo key file"):
        api_key(None, {}, settings)
    secret = "grk_" + "A" * 43
    Path(f"{db}.demo-key").write_text(secret + "\n")
    assert api_key(None, {}, settings) == secret
    with pytest.raises(CommandFailed, match="keys create"):
        api_key(None, {}, Settings(database_url=f"sqlite:///{db}", grsai_api_key="sk-real"))


def test_bar_fills_with_progress_and_fits_the_width() -> None:
    """The bar is proportional to progress, keeps its length, and never exceeds the width."""
    half = bar(_task(progress=50), 80, 3.2)
    full = bar(_task("succeeded", 100), 80, 9)
    assert half.startswith("[" + "#" * 17 + "." * 18 + "]")
    assert "50%" in half
    assert "3s" in half
    assert full.index("]") == half.index("]")
    assert all(len(bar(_task(progress=p), w, 1)) < w for p in (0, 50, 100) for w in (20, 80))


def test_line_names_copies_under_way() -> None:
    """The plain line says how many result files are still being copied."""
    pending = {"asset": {"status": "pending"}}
    task = _task("succeeded", 100, results=[pending, pending])
    assert line(task) == "task_1 succeeded, copying 2 result files 100%"


def test_plain_progress_writes_one_line_per_change() -> None:
    """Off a terminal, a repeated state prints nothing; each change is one line."""
    out = io.StringIO()
    progress = Progress(out, lambda: 0.0, tty=False)
    for task in (_task(progress=10), _task(progress=10), _task(progress=20)):
        progress.show(task)
    assert out.getvalue() == "task_1 running 10%\ntask_1 running 20%\n"


def test_terminal_progress_redraws_one_line() -> None:
    """On a terminal each state redraws the line with a carriage return; `end` adds a newline."""
    out = io.StringIO()
    ticks = iter([0.0, 1.0, 2.0])
    progress = Progress(out, lambda: next(ticks), tty=True, columns=lambda: 60)
    progress.show(_task(progress=10))
    progress.show(_task("succeeded", 100))
    progress.end()
    text = out.getvalue()
    assert (text.count("\r"), text.count("\n")) == (2, 1)
    assert text.endswith("succeeded  2s\n")


Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> RelayClient:
    return RelayClient(RELAY, KEY, transport=httpx.MockTransport(handler))


async def _dropping(body: bytes) -> AsyncIterator[bytes]:
    yield body
    raise httpx.ReadError("connection reset")


async def test_follow_resumes_a_dropped_stream_with_last_event_id() -> None:
    """A stream that breaks is reopened with the last event's id; no state is shown twice."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        assert request.headers["authorization"] == f"Bearer {KEY}"
        if len(seen) == 1:
            return httpx.Response(200, content=_dropping(_frame(_task(progress=40), "e1")))
        return httpx.Response(200, content=_frame(_task("succeeded", 100), "e2"))

    out = io.StringIO()
    async with _client(handler) as client:
        task = await follow(client, "task_1", Progress(out, lambda: 0, tty=False), sleep=_no_sleep)
    assert task["status"] == "succeeded"
    assert seen == [None, "e1"]
    assert out.getvalue().splitlines() == [
        "task_1 running 40%",
        "lost the stream (cannot reach the relay at http://relay.test: the connection broke"
        " (connection reset)); reconnecting",
        "task_1 succeeded 100%",
    ]


async def test_follow_ends_on_204_with_the_state_it_holds() -> None:
    """A stream ended by the server before the task settled is reopened; 204 ends the follow."""
    answers = iter(
        [
            httpx.Response(
                200,
                content=_frame(
                    _task("succeeded", 100, results=[{"asset": {"status": "pending"}}]), "e1"
                ),
            ),
            httpx.Response(200, content=b""),
            httpx.Response(204),
        ]
    )
    async with _client(lambda _: next(answers)) as client:
        task = await follow(client, "task_1", Progress(io.StringIO(), lambda: 0), sleep=_no_sleep)
    assert task["results"] == [{"asset": {"status": "pending"}}]


async def test_follow_gives_up_on_a_dead_relay_after_its_retries() -> None:
    """A relay that never answers again ends the follow with one line, after each delay."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with _client(handler) as client:
        with pytest.raises(RelayUnreachable, match="gave up following task_1 after 4 attempts"):
            await follow(
                client, "task_1", Progress(io.StringIO(), lambda: 0), sleep=sleep, delays=(1, 2, 3)
            )
    assert slept == [1, 2, 3]


async def test_follow_reports_the_relays_json_error() -> None:
    """A 404 on the stream is the relay's message, exit 2, with no retry."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such task"}})

    async with _client(handler) as client:
        with pytest.raises(ApiError, match="404 not_found: no such task") as caught:
            await follow(client, "task_1", Progress(io.StringIO(), lambda: 0), sleep=_no_sleep)
    assert caught.value.exit_code == 2


async def test_submit_sends_an_idempotency_key_and_prints_the_id() -> None:
    """Submit POSTs the body with a generated Idempotency-Key; without --wait it stops there."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json=_task("pending"))

    ns = parser().parse_args(["submit", "--model", "m", "--prompt", "p", "--param", "variants=2"])
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO(), token=lambda: "tok")
    assert await submit(ns, RELAY, KEY, console, httpx.MockTransport(handler)) == 0
    assert sent[0].headers["idempotency-key"] == "cli-tok"
    assert json.loads(sent[0].content) == {"model": "m", "prompt": "p", "variants": 2}
    assert out.getvalue() == "task_1\n"


async def test_save_results_uses_stored_copies_and_never_overwrites(tmp_path: Path) -> None:
    """Stored copies come from the relay (with the key), others from GrsAI (without it); a
    taken name gets a `-2` suffix instead of being replaced."""
    asked: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    stored = {
        "url": "https://public.example/v1/tasks/task_1/results/0",
        "asset": {"status": "stored"},
    }
    upstream = {
        "url": None,
        "upstream_url": "http://grsai.test/f/1.webp",
        "asset": {"status": "failed"},
    }
    task = _task("succeeded", 100, results=[stored, upstream])
    (tmp_path / "task_1-0.png").write_bytes(b"mine")
    async with _client(handler) as client:
        paths = await save_results(client, task, tmp_path)
    assert [p.name for p in paths] == ["task_1-0-2.png", "task_1-1.png"]
    assert (tmp_path / "task_1-0.png").read_bytes() == b"mine"
    assert all(p.read_bytes() == PNG for p in paths)
    assert asked == [
        (f"{RELAY}/v1/tasks/task_1/results/0", f"Bearer {KEY}"),
        ("http://grsai.test/f/1.webp", None),
    ]
    assert sorted(os.listdir(tmp_path)) == sorted(["task_1-0.png", *(p.name for p in paths)])


async def test_a_copy_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    """The relay's copy is checked against the task's SHA-256; a mismatch saves nothing."""
    entry = {"url": "/v1/tasks/task_1/results/0", "sha256": "0" * 64, "asset": {"status": "stored"}}

    async with _client(lambda _: httpx.Response(200, content=PNG)) as client:
        with pytest.raises(CommandFailed, match="SHA-256"):
            await save_results(client, _task("succeeded", 100, results=[entry]), tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("content_type", "url", "ext"),
    [
        ("image/jpeg", "http://x/a", ".jpg"),
        ("video/mp4; codecs=x", "http://x/a", ".mp4"),
        (None, "http://x/a/b.WEBP?sig=1", ".webp"),
        ("application/octet-stream", "http://x/a", ".bin"),
        (None, "http://x/a.tar.gz/../weird..", ".bin"),
    ],
)
def test_file_extension_comes_from_the_type_then_the_url(
    content_type: str | None, url: str, ext: str
) -> None:
    """The saved file's extension: its media type, else the URL's, else `.bin`."""
    assert extension(content_type, url) == ext
