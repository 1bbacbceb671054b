"""The simulator's fault injection: `[sim:...]` prompt directives, global rates, retries."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from service.simulator import SimulatorConfig
from service.simulator.faults import DirectiveError, parse_directives
from tests.unit.test_simulator import HOOK, TERMINAL, Harness, fast_config, simulated

DRAW = "/v1/draw/completions"


@pytest.fixture(name="h")
async def _h() -> AsyncIterator[Harness]:
    async with simulated() as h:
        yield h


async def callbacks_for(h: Harness, prompt: str, **fields: object) -> list[str]:
    """Submit in callback mode, wait for everything, return the statuses POSTed."""
    await h.submit_id(DRAW, "gpt-image-2", prompt, webHook=HOOK, **fields)
    await h.sim.wait_idle()
    return [b["status"] for b in h.receiver.bodies]


@pytest.mark.parametrize("reason", ["output_moderation", "input_moderation", "error"])
async def test_fail_directive_ends_failed_with_reason(h: Harness, reason: str) -> None:
    """`[sim:fail=REASON]` ends the task failed with that failure_reason and an error text."""
    task = await h.poll_until_final(
        await h.submit_id(DRAW, "gpt-image-2", f"x [sim:fail={reason}]")
    )
    assert (task["status"], task["failure_reason"], task["results"]) == ("failed", reason, None)
    assert task["error"]
    assert task["end_time"] > 0


async def test_flux_failure_uses_fail_reason(h: Harness) -> None:
    """Flux reports a failure under `fail_reason`, not `failure_reason`."""
    task_id = await h.submit_id("/v1/draw/flux", "flux-pro-1.1", "[sim:fail=output_moderation]")
    task = await h.poll_until_final(task_id)
    assert task["fail_reason"] == "output_moderation"
    assert "failure_reason" not in task
    assert task["url"] == ""


async def test_violation_directive_ends_with_violation_status(h: Harness) -> None:
    """`[sim:violation]` ends the task with the newer `violation` status."""
    task = await h.poll_until_final(await h.submit_id(DRAW, "sora-image", "[sim:violation]"))
    assert task["status"] == "violation"
    assert task["error"]


async def test_reject_directive_answers_insufficient_credits(h: Harness) -> None:
    """`[sim:reject]` answers code -1 "insufficient credits" and creates no task."""
    answer = await h.submit(DRAW, "gpt-image-2", "[sim:reject]", webHook=HOOK)
    assert (answer.status_code, answer.json()) == (
        200,
        {"code": -1, "msg": "insufficient credits", "data": None},
    )
    assert h.sim.tasks == {}


@pytest.mark.parametrize(
    ("status", "msg"),
    [(429, "too many requests"), (500, "internal server error"), (401, "unauthorized")],
)
async def test_http_directive_answers_that_status(h: Harness, status: int, msg: str) -> None:
    """`[sim:http=N]` answers HTTP N with a JSON error body and creates no task."""
    answer = await h.submit(DRAW, "gpt-image-2", f"[sim:http={status}]")
    assert answer.status_code == status
    assert answer.json() == {"code": -1, "msg": msg, "data": None}
    assert ("retry-after" in answer.headers) is (status == 429)
    assert h.sim.tasks == {}


async def test_delay_directive_waits_before_first_progress(h: Harness) -> None:
    """`[sim:delay=S]` holds the first progress callback back at least S seconds."""
    started = time.monotonic()
    await callbacks_for(h, "[sim:delay=0.15]")
    assert h.receiver.times[0] - started >= 0.15


async def test_duplicate_directive_sends_every_callback_twice(h: Harness) -> None:
    """`[sim:duplicate]` POSTs every callback twice."""
    statuses = await callbacks_for(h, "[sim:duplicate]")
    assert statuses == ["running"] * 6 + ["succeeded"] * 2
    bodies = h.receiver.bodies
    assert all(bodies[i] == bodies[i + 1] for i in range(0, len(bodies), 2))


async def test_reorder_directive_shuffles_callbacks(h: Harness) -> None:
    """`[sim:reorder]` sends the same callbacks in another order, after the task ended."""
    await callbacks_for(h, "[sim:reorder]")
    progress = [b["progress"] for b in h.receiver.bodies]
    assert sorted(progress) == [25, 50, 75, 100]
    assert progress != [25, 50, 75, 100]


async def test_drop_directive_sends_nothing_but_task_completes(h: Harness) -> None:
    """`[sim:drop]` sends no callback, yet the task completes and is pollable."""
    assert await callbacks_for(h, "[sim:drop]") == []
    task_id = next(iter(h.sim.tasks))
    assert (await h.poll(task_id))["data"]["status"] == "succeeded"


async def test_drop_final_directive_sends_progress_only(h: Harness) -> None:
    """`[sim:drop=final]` sends the progress callbacks but not the final one."""
    assert await callbacks_for(h, "[sim:drop=final]") == ["running"] * 3


async def test_late_directive_sends_callbacks_after_the_end(h: Harness) -> None:
    """`[sim:late=S]` sends every callback S seconds after the task ended."""
    started = time.monotonic()
    statuses = await callbacks_for(h, "[sim:late=0.15]")
    assert statuses == ["running"] * 3 + ["succeeded"]
    assert set(h.receiver.status_at_receipt) == {"succeeded"}
    assert h.receiver.times[0] - started >= 0.15


async def test_pollmiss_directive_hides_a_new_task_for_a_while(h: Harness) -> None:
    """`[sim:pollmiss=S]` answers -22 to polls for S seconds after submit."""
    task_id = await h.submit_id(DRAW, "gpt-image-2", "[sim:pollmiss=30]")
    assert (await h.poll(task_id))["code"] == -22
    h.clock.advance(30)
    assert (await h.poll(task_id))["code"] == 0


async def test_global_poll_miss_seconds_applies_to_every_task() -> None:
    """`poll_miss_seconds` makes every new task answer -22 for that long."""
    async with simulated(fast_config(poll_miss_seconds=5)) as h:
        task_id = await h.submit_id(DRAW, "gpt-image-2")
        assert (await h.poll(task_id))["code"] == -22
        h.clock.advance(5)
        assert (await h.poll(task_id))["code"] == 0


async def test_slow_directive_delays_the_submit_answer(h: Harness) -> None:
    """`[sim:slow=S]` delays the submit answer itself by S seconds."""
    started = time.monotonic()
    await h.submit_id(DRAW, "gpt-image-2", "[sim:slow=0.15]")
    assert time.monotonic() - started >= 0.15


async def test_directives_combine(h: Harness) -> None:
    """Several directives apply together and are listed in the admin report."""
    statuses = await callbacks_for(h, "a [sim:fail=error] b [sim:duplicate]", shutProgress=True)
    assert statuses == ["failed", "failed"]
    report = await h.report(h.receiver.bodies[0]["id"])
    assert report["faults"]["directives"] == ["fail=error", "duplicate"]


@pytest.mark.parametrize(
    "prompt",
    ["[sim:explode]", "[sim:fail=bored]", "[sim:delay=soon]", "[sim:http=200]", "[sim:reject=1]"],
)
async def test_bad_directive_is_a_submit_error(h: Harness, prompt: str) -> None:
    """An unknown directive or a bad value is answered code -1 instead of being ignored."""
    answer = (await h.submit(DRAW, "gpt-image-2", prompt)).json()
    assert answer["code"] == -1
    assert "sim:" in answer["msg"]


def test_parse_directives_is_case_insensitive_and_keeps_the_written_form() -> None:
    """Directive names are case-insensitive; the report keeps them lower-cased."""
    faults = parse_directives("x [SIM:Late=2] [sim:DROP=Final]")
    assert (faults.late, faults.drop, faults.directives) == (2.0, "final", ("late=2", "drop=final"))
    with pytest.raises(DirectiveError):
        parse_directives("[sim:pollmiss=-1]")


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({"fail_rate": 1.0}, ["failed"]),
        ({"duplicate_rate": 1.0}, ["succeeded", "succeeded"]),
        ({"drop_rate": 1.0}, []),
        ({"late_rate": 1.0}, ["succeeded"]),
    ],
)
async def test_global_rates_apply_faults(rates: dict[str, float], expected: list[str]) -> None:
    """A global rate of 1 applies its fault to every task."""
    async with simulated(fast_config(**rates)) as h:
        assert await callbacks_for(h, "plain", shutProgress=True) == expected
        assert (await h.report(next(iter(h.sim.tasks))))["faults"]["rolled"]


async def test_global_reject_rate_rejects_submits() -> None:
    """`reject_rate=1` answers every submit "insufficient credits"."""
    async with simulated(fast_config(reject_rate=1.0)) as h:
        answer = await h.submit(DRAW, "gpt-image-2", webHook="-1")
        assert answer.json()["msg"] == "insufficient credits"


async def test_seeded_rates_are_reproducible() -> None:
    """With one seed, half-rate faults fall on the same tasks every run."""
    outcomes = []
    for _ in range(2):
        async with simulated(fast_config(fail_rate=0.5), seed=3) as h:
            ids = [await h.submit_id(DRAW, "gpt-image-2") for _ in range(8)]
            outcomes.append([(await h.poll_until_final(i))["status"] for i in ids])
    assert outcomes[0] == outcomes[1]
    assert len(set(outcomes[0])) == 2
    assert set(outcomes[0]) <= TERMINAL


async def test_callback_is_retried_after_errors_and_refusals(h: Harness) -> None:
    """A callback answered non-2xx or refused is POSTed again, up to callback_retries times."""
    h.receiver.answers = [500, None, 500]  # three failures: 1 try + 2 retries, then give up
    task_id = await h.submit_id(DRAW, "gpt-image-2", webHook=HOOK, shutProgress=True)
    await h.sim.wait_idle()
    calls = (await h.report(task_id))["callbacks"]
    assert [(c["attempt"], c["status"]) for c in calls] == [(1, 500), (2, None), (3, 500)]
    assert "ConnectError" in calls[1]["error"]


async def test_zero_retries_posts_once() -> None:
    """With callback_retries=0 a failed callback is not retried."""
    async with simulated(fast_config(callback_retries=0)) as h:
        h.receiver.answers = [500]
        await callbacks_for(h, "x", shutProgress=True)
        assert h.sim.stats.callbacks_sent == 1


def test_config_rejects_bad_rates() -> None:
    """A rate outside 0..1 is refused when the config is built."""
    with pytest.raises(ValueError, match="fail_rate"):
        SimulatorConfig(fail_rate=1.5)


async def test_stream_json_directive_changes_only_the_content_type(h: Harness) -> None:
    """`[sim:stream=json]` sends the same `data:` frames as application/json."""
    answer = await h.submit(DRAW, "gpt-image-2", "[sim:stream=json]", shutProgress=True)
    assert answer.headers["content-type"] == "application/json"
    assert answer.text.startswith("data: {")
    assert answer.text.endswith("}\n\n")


async def test_stream_bare_directive_sends_bare_json_lines(h: Harness) -> None:
    """`[sim:stream=bare]` sends one bare JSON object per line, without `data: `."""
    answer = await h.submit(DRAW, "gpt-image-2", "[sim:stream=bare]")
    lines = answer.text.splitlines()
    assert [json.loads(line)["progress"] for line in lines] == [25, 50, 75, 100]


async def test_unwrapped_directive_polls_the_bare_task_object(h: Harness) -> None:
    """`[sim:unwrapped]` answers polls with the task object itself, without the envelope."""
    task_id = await h.submit_id(DRAW, "gpt-image-2", "[sim:unwrapped]")
    answer = await h.poll(task_id)
    assert "code" not in answer
    assert answer["id"] == task_id
