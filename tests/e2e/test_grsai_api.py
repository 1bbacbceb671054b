"""Code written for GrsAI runs unchanged against the relay: only the base URL and key differ.

The clients of tests/grsai_clients.py (written as GrsAI's documentation writes them) talk to a
real relay (a subprocess) whose GrsAI is the simulator (a real server), for every model family,
in `"-1"` poll mode and stream mode, through the simulator's faults. Each task is then read
through the relay's native API, and the result URLs the client got are downloaded with a plain
GET: our signed links to the stored copies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests import grsai_clients as grsai
from tests.e2e.backends import Databases
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer, free_port, relay_env
from tests.e2e.test_grsai_clients import FAMILIES, FAMILY_IDS, check_result, payload

# GrsAI's shapes over HTTP, above the storage: the storage contract suite and the other
# end-to-end files run on PostgreSQL too, so this one runs once, on SQLite.
pytestmark = [pytest.mark.e2e, pytest.mark.no_database]
HANG = 60.0  # a hang guard, never a measure


class Relay:
    """The relay under test, its simulator and a client key (shared by this module)."""

    def __init__(self, process: RelayProcess, simulator: SimulatorServer, key: str) -> None:
        self.process, self.simulator, self.key = process, simulator, key

    @property
    def url(self) -> str:
        """The base URL a GrsAI user puts in place of GrsAI's."""
        return self.process.url

    def native(self, task_id: str) -> grsai.JSON:
        """The task through the relay's own API."""
        response = httpx.get(f"{self.url}/v1/tasks/{task_id}", headers=_auth(self.key))
        assert response.status_code == 200, response.text
        task: grsai.JSON = response.json()
        return task


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(name="relay", scope="module")
def _relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """One relay (callback mode with the simulator) and one key for the whole module."""
    folder: Path = tmp_path_factory.mktemp("grsai-api")
    simulator = SimulatorServer(SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.02))
    simulator.start()
    databases = Databases(folder)
    port = free_port()
    env = relay_env(databases.url(), folder / "assets", simulator.url, public=True, port=port)
    process = RelayProcess(folder, env, port=port)
    try:
        process.start()
        yield Relay(process, simulator, process.create_key("grsai-user"))
    finally:
        process.kill()
        simulator.stop()
        databases.drop_all()


def check_relay_result(relay: Relay, task: grsai.JSON, model: str, top_level: bool) -> None:
    """GrsAI's checks, plus: the URLs are our signed links, fetched without a key, and the task
    reads the same through the native API."""
    check_result(task, model, top_level)
    for url in grsai.result_urls(task):
        assert url.startswith(f"{relay.url}/v1/files/{task['id']}/"), url
        assert httpx.get(url).status_code == 200
    native = relay.native(task["id"])
    assert native["status"] == "succeeded"
    assert native["model"] == model
    assert [r["asset"]["status"] for r in native["results"]] == ["stored"] * len(task["results"])


@pytest.mark.parametrize(("path", "model", "top_level"), FAMILIES, ids=FAMILY_IDS)
def test_poll_client_runs_unchanged(relay: Relay, path: str, model: str, top_level: bool) -> None:
    """`webHook: "-1"` then the documented poll loop ends with our stored copies."""
    task_id = grsai.submit(relay.url, relay.key, path, payload(model), "-1")
    data = grsai.poll_task(relay.url, relay.key, task_id, interval=0.05, timeout=HANG)
    check_relay_result(relay, data, model, top_level)


@pytest.mark.parametrize(("path", "model", "top_level"), FAMILIES, ids=FAMILY_IDS)
def test_stream_client_runs_unchanged(relay: Relay, path: str, model: str, top_level: bool) -> None:
    """The documented stream reader's last `data:` line is the finished task."""
    task = grsai.stream_task(relay.url, relay.key, path, payload(model), timeout=HANG)
    check_relay_result(relay, task, model, top_level)


@pytest.mark.parametrize("shut", [True, False])
def test_stream_lines_are_grsais(relay: Relay, shut: bool) -> None:
    """Only `data:` lines, rising progress, one final line last; shutProgress: just that one."""
    body = {"model": "nano-banana", "prompt": "a lighthouse", "shutProgress": shut}
    with httpx.stream(
        "POST", relay.url + "/v1/draw/nano-banana", headers=_auth(relay.key), json=body,
        timeout=HANG,
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    tasks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [t["status"] for t in tasks][-1] == "succeeded"
    assert all(t["status"] == "running" for t in tasks[:-1])
    assert [t["progress"] for t in tasks] == sorted(t["progress"] for t in tasks)
    assert len(tasks) == 1 if shut else len(tasks) > 1


# (prompt, the status a GrsAI client ends with, its failure_reason)
FAULTS = [
    ("[sim:duplicate] a fox", "succeeded", ""),
    ("[sim:reorder] a fox", "succeeded", ""),
    ("[sim:drop] a fox", "succeeded", ""),
    ("[sim:drop=final] a fox", "succeeded", ""),
    ("[sim:pollmiss=0.5] a fox", "succeeded", ""),
    ("[sim:fail=error] a fox", "failed", "error"),
    ("[sim:fail=output_moderation] a fox", "failed", "output_moderation"),
    ("[sim:fail=input_moderation] a fox", "failed", "input_moderation"),
    # GrsAI's newer `violation` status is a moderation failure to the relay and its clients
    ("[sim:violation] a fox", "failed", "output_moderation"),
]
FAULT_IDS = [prompt.split("]")[0].removeprefix("[sim:") for prompt, _, _ in FAULTS]


@pytest.mark.parametrize(("prompt", "status", "reason"), FAULTS, ids=FAULT_IDS)
@pytest.mark.parametrize("mode", ["poll", "stream"])
def test_clients_through_simulator_faults(
    relay: Relay, mode: str, prompt: str, status: str, reason: str
) -> None:
    """Duplicates, drops, reordering, misses, failures and moderation reach GrsAI's clients as
    GrsAI's final task object, the same as the native API reads it."""
    body = {"model": "nano-banana", "prompt": prompt, "shutProgress": False}
    path = "/v1/draw/nano-banana"
    if mode == "poll":
        task_id = grsai.submit(relay.url, relay.key, path, body, "-1")
        task = grsai.poll_task(relay.url, relay.key, task_id, interval=0.05, timeout=HANG)
    else:
        task = grsai.stream_task(relay.url, relay.key, path, body, timeout=HANG)
    assert (task["status"], task["failure_reason"]) == (status, reason), task
    native = relay.native(task["id"])
    assert native["status"] == status
    if status == "succeeded":
        assert httpx.get(grsai.first_result(task)[0]).status_code == 200
    else:
        assert native["failure_reason"] == reason
        assert task["results"] is None


def test_refusals_are_grsai_errors(relay: Relay) -> None:
    """GrsAI's own refusal, a bad model and a bad key reach the client as GrsAI's errors."""
    path = "/v1/draw/nano-banana"
    with pytest.raises(RuntimeError, match="insufficient credits"):
        grsai.submit(
            relay.url, relay.key, path, {**payload("nano-banana"), "prompt": "[sim:reject] x"}, "-1"
        )
    wrong = httpx.post(relay.url + "/v1/draw/flux", headers=_auth(relay.key),
                       json={**payload("nano-banana"), "webHook": "-1"})  # fmt: skip
    assert wrong.status_code == 422
    assert wrong.json()["code"] == -1
    bad_key = httpx.post(
        relay.url + path, headers=_auth("sk-not-ours"), json=payload("nano-banana")
    )
    assert (bad_key.status_code, bad_key.json()["code"]) == (401, -1)
    assert httpx.post(relay.url + "/v1/draw/result", headers=_auth(relay.key),
                      json={"id": "task_unknown"}).json()["code"] == -22  # fmt: skip


def test_stream_client_leaving_does_not_stop_the_task(relay: Relay) -> None:
    """A stream client that hangs up after its first line: the task completes and is kept."""
    body = {"model": "nano-banana", "prompt": "[sim:delay=0.5] a fox", "shutProgress": False}
    with httpx.stream(
        "POST", relay.url + "/v1/draw/nano-banana", headers=_auth(relay.key), json=body,
        timeout=HANG,
    ) as response:  # fmt: skip
        first = next(line for line in response.iter_lines() if line)
    task_id = json.loads(first.removeprefix("data: "))["id"]  # the connection is closed now
    done = grsai.poll_task(relay.url, relay.key, task_id, interval=0.05, timeout=HANG)
    assert done["status"] == "succeeded"
    assert relay.native(task_id)["status"] == "succeeded"


def test_concurrent_clients(relay: Relay) -> None:
    """Several GrsAI clients at once, both modes, each gets its own task."""
    got: list[str] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            body = {**payload("nano-banana"), "prompt": f"fox {n}"}
            if n % 2:
                task = grsai.stream_task(relay.url, relay.key, "/v1/draw/nano-banana", body)
            else:
                task_id = grsai.submit(relay.url, relay.key, "/v1/draw/nano-banana", body, "-1")
                task = grsai.poll_task(relay.url, relay.key, task_id, interval=0.05)
            got.append(task["id"])
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG)
    assert errors == []
    assert len(set(got)) == 8


def test_webhook_client_runs_unchanged(relay: Relay) -> None:
    """A `webHook` URL receives GrsAI's own callback bodies, ending with the final one."""
    receiver = grsai.CallbackReceiver()
    try:
        for path, model, top_level in FAMILIES:
            task_id = grsai.submit(relay.url, relay.key, path, payload(model), receiver.url)
            task = receiver.final(task_id, timeout=HANG)
            check_relay_result(relay, task, model, top_level)
    finally:
        receiver.close()
