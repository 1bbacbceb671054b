"""Stream mode end to end: the real relay reads the simulator's streamed submit answers.

The relays here have no public URL. The simulator takes half a second per progress step, so a
stream is open long enough to kill the relay in the middle of it. Every wait is a hang guard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer

STEPS = 3
STREAM = {"TASK_MODE": "stream"}


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator whose tasks take about two seconds (half a second per step)."""
    config = SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.5, progress_steps=STEPS)
    sim = SimulatorServer(config).start()
    yield sim
    sim.stop()


async def _submit(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, prompt: str, **fields: Any
) -> dict[str, Any]:
    body = {"model": "nano-banana", "prompt": prompt, **fields}
    created = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    assert created.status_code == 202, created.text
    task: dict[str, Any] = created.json()
    return task


def _events(relay: RelayProcess, task_id: str) -> list[tuple[str, str | None, str | None]]:
    """(source, outcome, detail) of every stored event of a task, oldest first."""
    rows = relay.query(
        "SELECT source, outcome, detail FROM events WHERE task_id = ? ORDER BY id", (task_id,)
    )
    return [(r[0], r[1], r[2]) for r in rows]


def _mode(relay: RelayProcess, task_id: str) -> str:
    return str(relay.query("SELECT mode FROM tasks WHERE id = ?", (task_id,))[0][0])


async def _sim_task(client: httpx.AsyncClient, sim: SimulatorServer, upstream_id: str) -> Any:
    return (await client.get(f"{sim.url}/_sim/tasks/{upstream_id}")).json()


@pytest.mark.parametrize("style", ["sse", "json", "bare"])
async def test_stream_task_succeeds_with_every_frame_stored(
    start_relay: RelayFactory,
    simulator: SimulatorServer,
    client: httpx.AsyncClient,
    style: str,
) -> None:
    """A stream-mode task answers with GrsAI's id at once, and every progress frame and the final
    one are stored as applied `stream` events; no poll was needed."""
    relay = start_relay(public=False, CALLBACK_SILENCE="600", **STREAM)  # no silence poll
    key = relay.create_key("stream")
    task = await _submit(client, relay, key, f"[sim:stream={style}] a fox")
    assert task["upstream_id"]
    done = await wait_for_task(client, relay, key, task["id"])
    assert done["status"] == "succeeded"
    assert _mode(relay, task["id"]) == "stream"
    assert _events(relay, task["id"]) == [("stream", "applied", None)] * (STEPS + 1)
    truth = await _sim_task(client, simulator, task["upstream_id"])
    assert (truth["mode"], truth["shut_progress"], truth["polls"]) == ("stream", False, 0)


async def test_per_task_mode_and_its_validation(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """Without a public URL the default is poll mode; a task may ask for stream mode; asking for
    callback mode is a 422 naming the field."""
    relay = start_relay(public=False)
    key = relay.create_key("modes")
    polled = await _submit(client, relay, key, "a hare")
    streamed = await _submit(client, relay, key, "a hare", mode="stream")
    refused = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "a hare", "mode": "callback"},
        headers=auth(key),
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0]["field"] == "mode"
    assert "PUBLIC_BASE_URL" in refused.json()["error"]["message"]
    bad = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "a hare", "mode": "carrier-pigeon"},
        headers=auth(key),
    )
    assert bad.status_code == 422
    for task in (polled, streamed):
        assert (await wait_for_task(client, relay, key, task["id"]))["status"] == "succeeded"
    assert (_mode(relay, polled["id"]), _mode(relay, streamed["id"])) == ("poll", "stream")


@pytest.mark.parametrize("drop", ["final", "all"])
async def test_dropped_stream_falls_back_to_polling(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient, drop: str
) -> None:
    """A stream that ends without its final frame hands the task to the poller at once, which
    finishes it."""
    relay = start_relay(public=False, CALLBACK_SILENCE="600", **STREAM)
    key = relay.create_key("drops")
    task = await _submit(client, relay, key, f"[sim:drop={drop}] an owl")
    done = await wait_for_task(client, relay, key, task["id"])
    assert done["status"] == "succeeded"
    events = _events(relay, task["id"])
    handed = [e for e in events if e[1] == "deferred"]
    assert handed == [
        ("stream", "deferred", "the stream ended without a final frame; polling instead")
    ]
    assert events[-1][0] == "poll"
    assert (await _sim_task(client, simulator, task["upstream_id"]))["polls"] >= 1


@pytest.mark.parametrize(
    ("directive", "reason"),
    [
        ("[sim:fail=output_moderation]", "output_moderation"),
        ("[sim:fail=input_moderation]", "input_moderation"),
        ("[sim:fail=error]", "error"),
        ("[sim:violation]", "output_moderation"),
    ],
)
async def test_failure_frames_fail_the_task(
    start_relay: RelayFactory, client: httpx.AsyncClient, directive: str, reason: str
) -> None:
    """A final frame saying failed (or violation) ends the task failed with GrsAI's reason."""
    relay = start_relay(public=False, CALLBACK_SILENCE="600", **STREAM)  # no silence poll
    key = relay.create_key("fails")
    task = await _submit(client, relay, key, f"{directive} a moth")
    done = await wait_for_task(client, relay, key, task["id"])
    assert (done["status"], done["failure_reason"]) == ("failed", reason)
    assert _events(relay, task["id"])[-1] == ("stream", "applied", None)


async def test_relay_killed_mid_stream_finishes_by_polling_after_restart(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """SIGKILL while a stream is open: the restarted relay polls the task (its poll was pushed
    out by one silence window only) and it succeeds."""
    relay = start_relay(public=False, CALLBACK_SILENCE="2", **STREAM)
    key = relay.create_key("crash")
    task = await _submit(client, relay, key, "a badger")
    metrics = (await client.get(f"{relay.url}/metrics")).text
    assert "grsai_relay_upstream_streams 1.0" in metrics
    for _ in range(600):  # a hang guard: the stream's first frame is stored (off the answer)
        if _events(relay, task["id"]):
            break
        await asyncio.sleep(0.05)
    relay.kill()
    relay.start()
    done = await wait_for_task(client, relay, key, task["id"])
    assert done["status"] == "succeeded"
    sources = [e[0] for e in _events(relay, task["id"])]
    assert sources[0] == "stream"
    assert sources[-1] == "poll"
    assert (await _sim_task(client, simulator, task["upstream_id"]))["polls"] >= 1


async def test_graceful_stop_hands_open_streams_to_the_poller(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """SIGTERM with a stream open exits promptly and leaves the task due for a poll now; the
    next run finishes it."""
    relay = start_relay(public=False, CALLBACK_SILENCE="600", SHUTDOWN_TIMEOUT="5", **STREAM)
    key = relay.create_key("stop")
    task = await _submit(client, relay, key, "[sim:delay=3] a stoat")
    assert relay.terminate(timeout=30) == 0
    events = _events(relay, task["id"])
    assert ("stream", "deferred", "the relay is stopping; polling instead") in events
    due = relay.query("SELECT next_poll_at, status FROM tasks WHERE id = ?", (task["id"],))[0]
    assert due[0] is not None
    assert due[1] != "succeeded"
    relay.start()
    done = await wait_for_task(client, relay, key, task["id"])
    assert done["status"] == "succeeded"


async def test_beyond_stream_max_tasks_go_in_poll_mode(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """With STREAM_MAX=1, a second task submitted while the first streams is in poll mode, and
    the log says so; both succeed."""
    relay = start_relay(public=False, STREAM_MAX="1", **STREAM)
    key = relay.create_key("max")
    first = await _submit(client, relay, key, "a vole")
    second = await _submit(client, relay, key, "a vole")
    assert (_mode(relay, first["id"]), _mode(relay, second["id"])) == ("stream", "poll")
    for task in (first, second):
        assert (await wait_for_task(client, relay, key, task["id"]))["status"] == "succeeded"
    assert "submitting a task in poll mode instead" in relay.logs()
    for _ in range(600):  # a hang guard: the gauge falls back to 0 once both streams ended
        if "grsai_relay_upstream_streams 0.0" in (await client.get(f"{relay.url}/metrics")).text:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a stream is still counted open")
