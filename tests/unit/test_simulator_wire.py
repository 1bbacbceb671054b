"""Broken answers: slow acks, broken submit answers, broken polls (in-process and over uvicorn)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.simulator import Simulator, SimulatorConfig, create_simulator_app, simulator_server
from service.simulator.faults import POLL_FAULTS, DirectiveError, PollFault, parse_directives
from service.simulator.wire import WIRE_FAULTS
from tests.unit.test_simulator import AUTH, HOOK, JSON, Harness, fast_config, simulated

DRAW = "/v1/draw/completions"
MODEL = "gpt-image-2"


@pytest.fixture(name="h")
async def _h() -> AsyncIterator[Harness]:
    async with simulated() as h:
        yield h


@contextlib.asynccontextmanager
async def served(config: SimulatorConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Serve a simulator with uvicorn on a free loopback port; yield a client for it."""
    server = simulator_server("127.0.0.1", 0, config, log_level="critical")
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.01)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=5
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def only_task_id(h: Harness) -> str:
    """The id of the one task the simulator holds."""
    ids: list[str] = (await h.client.get("/_sim/tasks", params={"ids": "1"})).json()["ids"]
    assert len(ids) == 1, ids
    return ids[0]


async def stats(client: httpx.AsyncClient) -> JSON:
    """GET /_sim/stats."""
    answer: JSON = (await client.get("/_sim/stats")).json()
    return answer


# --- slowack -------------------------------------------------------------------------------


async def test_slowack_creates_and_runs_the_task_before_answering(h: Harness) -> None:
    """`[sim:slowack=S]`: the task exists and calls back while the submit answer is held back."""
    submit = asyncio.create_task(h.submit(DRAW, MODEL, "x [sim:slowack=60]", webHook=HOOK))
    try:
        for _ in range(1000):
            if h.receiver.bodies:
                break
            await asyncio.sleep(0.005)
        assert h.receiver.bodies, "the task never called back"
        assert not submit.done()
        task_id = await only_task_id(h)
        assert h.receiver.bodies[0]["id"] == task_id
        report = await h.report(task_id)
        assert report["faults"]["slowack"] == 60
        assert report["faults"]["directives"] == ["slowack=60"]
    finally:
        submit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await submit


async def test_slowack_answers_the_id_in_the_end(h: Harness) -> None:
    """A slow ack still answers the normal success envelope with the task's id."""
    answer = (await h.submit(DRAW, MODEL, "[sim:slowack=0.01]", webHook="-1")).json()
    assert answer == {"code": 0, "msg": "success", "data": {"id": await only_task_id(h)}}


async def test_global_slowack_rate_slows_every_ack() -> None:
    """`slowack_rate=1` gives every task a slow ack of `slowack_seconds`, listed as rolled."""
    async with simulated(fast_config(slowack_rate=1.0, slowack_seconds=0.01)) as h:
        task_id = await h.submit_id(DRAW, MODEL)
        faults = (await h.report(task_id))["faults"]
        assert (faults["slowack"], faults["rolled"]) == (0.01, ["slowack"])


# --- submitfault ---------------------------------------------------------------------------


async def test_submitfault_html_is_a_502_page_without_a_task(h: Harness) -> None:
    """`[sim:submitfault=html]`: HTTP 502 with an HTML page; no task is created."""
    answer = await h.submit(DRAW, MODEL, "[sim:submitfault=html]", webHook=HOOK)
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in answer.text
    assert h.sim.tasks == {}
    assert (await stats(h.client))["submit_faults"] == 1


@pytest.mark.parametrize(("kind", "msg"), [("500", "internal server error"), ("429", None)])
async def test_submitfault_json_statuses_create_no_task(
    h: Harness, kind: str, msg: str | None
) -> None:
    """`[sim:submitfault=500|429]`: that HTTP status with GrsAI's JSON error body, no task."""
    answer = await h.submit(DRAW, MODEL, f"[sim:submitfault={kind}]", webHook="-1")
    assert answer.status_code == int(kind)
    assert answer.json()["code"] == -1
    if msg is not None:
        assert answer.json()["msg"] == msg
    assert ("retry-after" in answer.headers) is (kind == "429")
    assert h.sim.tasks == {}


async def test_submitfault_truncated_creates_the_task_but_cuts_the_answer(h: Harness) -> None:
    """`[sim:submitfault=truncated]`: HTTP 200, half a JSON body; the task exists and runs."""
    answer = await h.submit(DRAW, MODEL, "[sim:submitfault=truncated]", webHook="-1")
    assert answer.status_code == 200
    task_id = await only_task_id(h)
    whole = json.dumps(
        {"code": 0, "msg": "success", "data": {"id": task_id}}, separators=(",", ":")
    )
    assert 0 < len(answer.content) < len(whole)
    assert whole.encode().startswith(answer.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)
    assert (await h.poll_until_final(task_id))["status"] == "succeeded"
    assert (await h.report(task_id))["submit_fault"] == "truncated"


async def test_submitfault_close_drops_the_connection_after_creating_the_task() -> None:
    """`[sim:submitfault=close]` over real HTTP: no answer (RemoteProtocolError), yet a task."""
    async with served(fast_config()) as client:
        body = {"model": MODEL, "prompt": "[sim:submitfault=close]", "webHook": "-1"}
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(DRAW, json=body)
        ids = (await client.get("/_sim/tasks", params={"ids": "1"})).json()["ids"]
        assert len(ids) == 1
        report = (await client.get(f"/_sim/tasks/{ids[0]}")).json()
        assert report["submit_fault"] == "close"
        assert (await stats(client))["submit_faults"] == 1
        # the server itself is fine: the next request on a new connection is answered
        assert (await client.post(DRAW, json={**body, "prompt": "ok"})).json()["code"] == 0


async def test_submitfault_close_in_process_raises_remote_protocol_error(h: Harness) -> None:
    """In-process (ASGITransport) a dropped answer raises httpx.RemoteProtocolError too."""
    with pytest.raises(httpx.RemoteProtocolError):
        await h.submit(DRAW, MODEL, "[sim:submitfault=close]", webHook="-1")
    await only_task_id(h)


async def test_slowack_and_submitfault_combine(h: Harness) -> None:
    """A slow ack can end broken too: the task runs, then the late answer is cut short."""
    answer = await h.submit(
        DRAW, MODEL, "[sim:slowack=0.01] [sim:submitfault=truncated]", webHook="-1"
    )
    assert answer.status_code == 200
    assert answer.content.startswith(b'{"code":0')
    await only_task_id(h)


async def test_global_submit_fault_rate_breaks_every_submit() -> None:
    """`submit_fault_rate=1` breaks each submit answer with a wire fault, listed as rolled."""
    async with simulated(fast_config(submit_fault_rate=1.0), seed=11) as h:
        statuses: list[int | None] = []
        for _ in range(12):
            try:
                answer = await h.submit(DRAW, MODEL, webHook="-1")
            except httpx.RemoteProtocolError:
                statuses.append(None)  # close
            else:
                assert not is_normal_submit(answer)
                statuses.append(answer.status_code)
        assert set(statuses) <= {None, 200, 429, 500, 502}
        assert len(set(statuses)) >= 3
        assert len(h.sim.tasks) == sum(s in (None, 200) for s in statuses)
        for task_id in h.sim.tasks:
            report = await h.report(task_id)
            assert report["submit_fault"] in ("truncated", "close")
            assert report["faults"]["rolled"] == ["submit_fault"]
        assert (await stats(h.client))["submit_faults"] == 12


# --- pollfault -----------------------------------------------------------------------------


async def poll_raw(client: httpx.AsyncClient, task_id: str) -> httpx.Response:
    """POST /v1/draw/result and return the raw response."""
    return await client.post("/v1/draw/result", json={"id": task_id})


async def poll_or_drop(client: httpx.AsyncClient, task_id: str) -> httpx.Response | None:
    """Like `poll_raw`, but None when the answer was dropped."""
    try:
        return await poll_raw(client, task_id)
    except httpx.RemoteProtocolError:
        return None


def is_normal_submit(answer: httpx.Response) -> bool:
    """Whether a submit answer is an intact JSON success envelope."""
    try:
        return answer.status_code == 200 and json.loads(answer.content)["code"] == 0
    except ValueError:
        return False


def is_normal_poll(answer: httpx.Response, task_id: str) -> bool:
    """Whether a poll answer is the intact success envelope for `task_id`."""
    if answer.status_code != 200:
        return False
    try:
        body: Any = json.loads(answer.content)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == 0 and body["data"]["id"] == task_id


@pytest.mark.parametrize(
    ("kind", "status"), [("html", 502), ("truncated", 200), ("500", 500), ("429", 429)]
)
async def test_pollfault_breaks_the_first_n_polls(h: Harness, kind: str, status: int) -> None:
    """`[sim:pollfault=KIND:3]`: the first 3 polls answer KIND, later ones the task."""
    task_id = await h.submit_id(DRAW, MODEL, f"[sim:pollfault={kind}:3]")
    answers = [await poll_raw(h.client, task_id) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [status] * 3
    assert not any(is_normal_poll(a, task_id) for a in answers[:3])
    assert is_normal_poll(answers[3], task_id)
    report = await h.report(task_id)
    assert report["polls"] == 4
    assert report["poll_faults"] == [kind] * 3
    assert report["poll_fault_counts"] == {kind: 3}
    assert report["faults"]["poll_fault"] == {"kind": kind, "count": 3}
    assert (await stats(h.client))["poll_faults"] == 3


async def test_pollfault_truncated_is_a_prefix_of_the_real_answer(h: Harness) -> None:
    """A truncated poll answer is the first half of the answer that would have been sent."""
    task_id = await h.submit_id(DRAW, MODEL, "[sim:pollfault=truncated:1]")
    cut = (await poll_raw(h.client, task_id)).content
    assert cut.startswith(b'{"code":0,"msg":"success","data":{"id":"' + task_id[:4].encode())
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)


async def test_pollfault_defaults_to_two_polls(h: Harness) -> None:
    """Without `:N` the first two polls break."""
    task_id = await h.submit_id(DRAW, MODEL, "[sim:pollfault=500]")
    codes = [(await poll_raw(h.client, task_id)).status_code for _ in range(3)]
    assert codes == [500, 500, 200]


async def test_pollfault_slow_answers_normally_after_the_wait() -> None:
    """`[sim:pollfault=slow]` waits `poll_slow_seconds`, then answers the task; it is recorded."""
    async with simulated(fast_config(poll_slow_seconds=0.01)) as h:
        task_id = await h.submit_id(DRAW, MODEL, "[sim:pollfault=slow:1]")
        assert is_normal_poll(await poll_raw(h.client, task_id), task_id)
        assert (await h.report(task_id))["poll_faults"] == ["slow"]


async def test_pollfault_comes_before_the_poll_miss_window(h: Harness) -> None:
    """A broken poll is broken even while the task would still answer -22."""
    task_id = await h.submit_id(DRAW, MODEL, "[sim:pollfault=html:1] [sim:pollmiss=30]")
    assert (await poll_raw(h.client, task_id)).status_code == 502
    assert (await h.poll(task_id))["code"] == -22


async def test_pollfault_close_drops_the_connection_over_http() -> None:
    """`[sim:pollfault=close]` over real HTTP: the poll gets no answer at all."""
    async with served(fast_config()) as client:
        submit = {"model": MODEL, "prompt": "[sim:pollfault=close:1]", "webHook": "-1"}
        task_id = (await client.post(DRAW, json=submit)).json()["data"]["id"]
        with pytest.raises(httpx.RemoteProtocolError):
            await poll_raw(client, task_id)
        assert is_normal_poll(await poll_raw(client, task_id), task_id)
        report = (await client.get(f"/_sim/tasks/{task_id}")).json()
        assert report["poll_faults"] == ["close"]


async def poll_kinds(seed: int, polls: int) -> list[str | None]:
    """Poll one task `polls` times with poll_fault_rate 0.5; return the fault of each poll."""
    async with simulated(fast_config(poll_fault_rate=0.5), seed=seed) as h:
        task_id = await h.submit_id(DRAW, MODEL)
        for _ in range(polls):
            await poll_or_drop(h.client, task_id)
        report = await h.report(task_id)
        assert report["polls"] == polls
        faults: list[str] = report["poll_faults"]
        return [*faults]


async def test_global_poll_fault_rate_is_seeded_and_never_slow() -> None:
    """`poll_fault_rate` breaks polls at random: reproducible per seed, wire kinds only."""
    first, again = await poll_kinds(5, 60), await poll_kinds(5, 60)
    assert first == again
    assert 0 < len(first) < 60
    assert set(first) <= set(WIRE_FAULTS)
    assert len(set(first)) >= 3


async def test_global_poll_fault_rate_applies_to_unknown_ids_too() -> None:
    """A rate of 1 breaks every poll, even of an id nobody knows; stats count them."""
    async with simulated(fast_config(poll_fault_rate=1.0)) as h:
        for _ in range(20):
            answer = await poll_or_drop(h.client, "1-nothing")
            assert answer is None or answer.status_code != 200 or not answer.text.endswith("}")
        assert (await stats(h.client))["poll_faults"] == 20


async def test_pollfault_directive_wins_over_the_rate() -> None:
    """A task's own `pollfault` decides its first N polls whatever the global dice say."""
    async with simulated(fast_config(poll_fault_rate=1.0, poll_slow_seconds=0.01)) as h:
        task_id = await h.submit_id(DRAW, MODEL, "[sim:pollfault=slow:2]")
        for _ in range(2):
            assert is_normal_poll(await poll_raw(h.client, task_id), task_id)
        assert (await h.report(task_id))["poll_faults"] == ["slow", "slow"]


# --- parsing, config, reports --------------------------------------------------------------


def test_parse_new_directives() -> None:
    """slowack, submitfault and pollfault parse into the fault fields."""
    faults = parse_directives("[sim:slowack=1.5] [sim:submitfault=CLOSE] [sim:pollfault=429:4]")
    assert faults.slowack == 1.5
    assert faults.submit_fault == "close"
    assert faults.poll_fault == PollFault("429", 4)
    assert parse_directives("[sim:pollfault=slow]").poll_fault == PollFault("slow", 2)
    assert set(POLL_FAULTS) == {*WIRE_FAULTS, "slow"}


@pytest.mark.parametrize(
    "prompt",
    [
        "[sim:slowack=-1]",
        "[sim:slowack]",
        "[sim:submitfault=slow]",
        "[sim:submitfault]",
        "[sim:pollfault=boom]",
        "[sim:pollfault=html:0]",
        "[sim:pollfault=html:x]",
        "[sim:pollfault=html:]",
        "[sim:pollfault]",
    ],
)
def test_bad_new_directives_are_refused(prompt: str) -> None:
    """Bad values of the new directives are errors, not silently ignored."""
    with pytest.raises(DirectiveError):
        parse_directives(prompt)


async def test_bad_new_directive_is_a_submit_error(h: Harness) -> None:
    """A bad `pollfault` value is answered code -1 naming the directive."""
    answer = (await h.submit(DRAW, MODEL, "[sim:pollfault=html:0]")).json()
    assert answer["code"] == -1
    assert "sim:pollfault" in answer["msg"]


def test_cli_flags_for_the_new_rates() -> None:
    """The new rates and waits have command-line flags and are range-checked."""
    parser = argparse.ArgumentParser()
    SimulatorConfig.add_cli_arguments(parser)
    ns = parser.parse_args(
        [
            "--poll-fault-rate",
            "0.1",
            "--poll-slow-seconds",
            "0.5",
            "--submit-fault-rate",
            "0.2",
            "--slowack-rate",
            "0.3",
            "--slowack-seconds",
            "2",
        ]
    )
    assert SimulatorConfig.from_cli(ns) == SimulatorConfig(
        poll_fault_rate=0.1,
        poll_slow_seconds=0.5,
        submit_fault_rate=0.2,
        slowack_rate=0.3,
        slowack_seconds=2,
    )
    defaults = SimulatorConfig()
    assert (defaults.poll_slow_seconds, defaults.poll_fault_rate) == (3.0, 0.0)
    for bad in ({"poll_fault_rate": 1.5}, {"submit_fault_rate": -0.1}, {"poll_slow_seconds": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SimulatorConfig(**bad)


async def test_callback_report_shows_the_exact_bytes_sent(h: Harness) -> None:
    """Each callback in the report carries `raw`, byte for byte what the receiver got."""
    task_id = await h.submit_id(DRAW, MODEL, webHook=HOOK)
    await h.sim.wait_idle()
    callbacks = (await h.report(task_id))["callbacks"]
    assert [c["raw"].encode() for c in callbacks] == h.receiver.raws
    assert all(json.loads(c["raw"]) == c["body"] for c in callbacks)
    assert all(c["seconds"] == 0 for c in callbacks)  # the manual clock did not move
    assert len(h.receiver.raws) == 4


async def test_all_tasks_endpoint_lists_every_report(h: Harness) -> None:
    """`GET /_sim/tasks` lists every task's report in submit order (`?ids=1`: ids only)."""
    ids = [await h.submit_id(DRAW, MODEL) for _ in range(3)]
    listed = (await h.client.get("/_sim/tasks")).json()["tasks"]
    assert [r["task"]["id"] for r in listed] == ids
    assert (await h.client.get("/_sim/tasks", params={"ids": "1"})).json() == {"ids": ids}


async def test_callback_posts_never_queue_inside_the_http_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most MAX_CONNECTIONS callback POSTs are in flight; the rest wait their turn outside."""
    monkeypatch.setattr("service.simulator.delivery.MAX_CONNECTIONS", 3)
    release, in_flight, peak = asyncio.Event(), [0], [0]

    async def slow_receiver(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await release.wait()
        in_flight[0] -= 1
        return httpx.Response(200, json={"code": 0, "msg": "success"})

    app = create_simulator_app(fast_config(), transport=httpx.MockTransport(slow_receiver))
    sim: Simulator = app.state.simulator
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sim.test", headers=AUTH
        ) as client,
    ):
        body = {"model": MODEL, "prompt": "x", "webHook": HOOK, "shutProgress": True}
        for _ in range(5):
            assert (await client.post(DRAW, json=body)).json()["code"] == 0
        for _ in range(1000):
            if in_flight[0] == 3 and all(t.done for t in sim.tasks.values()):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # room for a fourth POST to start, were it allowed to
        assert (in_flight[0], sim.stats.callbacks_sent) == (3, 3)
        release.set()
        await sim.wait_idle()
    assert (peak[0], sim.stats.callbacks_sent) == (3, 5)
