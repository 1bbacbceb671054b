"""The task state machine: forward-only states, rising progress, final terminal states."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.observation import Observation, ResultFile
from service.domain.records import TERMINAL, Task
from service.domain.transitions import Decision, apply, decide, fail_locally

NOW = 1_700_000_100.0
UID = "16-aaaa"
URL = "https://file.grsai.test/a.png"


def make_task(**changes: Any) -> Task:
    """A submitted, pending task bound to upstream id `UID`."""
    base: dict[str, Any] = {
        "id": "task_1",
        "api_key_id": "key_1",
        "model": "nano-banana",
        "endpoint": "/v1/draw/nano-banana",
        "mode": "callback",
        "input": {"model": "nano-banana", "prompt": "fox"},
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "upstream_id": UID,
        "submit_state": "submitted",
    }
    return Task(**{**base, **changes})


def running(progress: int | None, upstream_id: str = UID) -> Observation:
    """A running observation."""
    return Observation(upstream_id, "running", progress)


def succeeded(*urls: str, upstream_id: str = UID) -> Observation:
    """A succeeded observation with these result URLs."""
    return Observation(upstream_id, "succeeded", 100, tuple(ResultFile(u) for u in urls or (URL,)))


def failed(reason: str = "output_moderation", upstream_id: str = UID) -> Observation:
    """A failed observation."""
    return Observation(upstream_id, "failed", None, (), reason, "flagged")


def test_pending_to_running() -> None:
    """The first running observation moves pending to running with its progress."""
    decision = decide(make_task(), running(20), NOW)
    assert decision.outcome == "applied"
    assert decision.changes["status"] == "running"
    assert decision.changes["progress"] == 20
    assert decision.changes["updated_at"] == NOW
    assert decision.changes["last_event_at"] == NOW


def test_pending_to_running_without_progress_keeps_progress() -> None:
    """A running observation without progress still moves pending to running."""
    decision = decide(make_task(progress=5), running(None), NOW)
    assert decision.outcome == "applied"
    assert decision.changes["status"] == "running"
    assert decision.changes["progress"] == 5


def test_pending_to_running_never_lowers_progress() -> None:
    """Leaving pending never moves progress below what is stored."""
    decision = decide(make_task(progress=30), running(10), NOW)
    assert decision.changes["progress"] == 30


def test_progress_rises() -> None:
    """A running task takes a higher progress."""
    decision = decide(make_task(status="running", progress=20), running(60), NOW)
    assert decision.outcome == "applied"
    assert decision.changes == {"progress": 60, "updated_at": NOW, "last_event_at": NOW}


def test_equal_progress_is_duplicate() -> None:
    """The same progress again is a duplicate that only records when news last came."""
    decision = decide(make_task(status="running", progress=40), running(40), NOW)
    assert decision.outcome == "duplicate"
    assert decision.changes == {"last_event_at": NOW}


def test_running_without_progress_on_running_task_is_duplicate() -> None:
    """A running observation without progress tells a running task nothing new."""
    decision = decide(make_task(status="running", progress=40), running(None), NOW)
    assert decision.outcome == "duplicate"


def test_lower_progress_is_stale() -> None:
    """A lower progress is stale and changes nothing."""
    decision = decide(make_task(status="running", progress=70), running(30), NOW)
    assert decision.outcome == "stale"
    assert decision.changes == {}
    assert decision.detail == "progress 30 is behind 70"


def test_success_with_copying_queues_copies_and_hides_the_url() -> None:
    """With copying, a success queues a copy of each result and shows no URL until stored."""
    decision = decide(make_task(status="running"), succeeded(URL), NOW, copy_results=True)
    assert decision.copies == (URL,)
    entry = decision.changes["results"][0]
    assert (entry["url"], entry["upstream_url"], entry["asset"]["status"]) == (None, URL, "pending")


def test_succeeded_is_applied_with_results() -> None:
    """A succeeded observation finishes the task with its results and progress 100."""
    decision = decide(make_task(status="running", progress=50), succeeded(URL), NOW)
    assert decision.outcome == "applied"
    assert decision.copies == ()
    changes = decision.changes
    assert changes["status"] == "succeeded"
    assert changes["progress"] == 100
    assert [(r["url"], r["upstream_url"]) for r in changes["results"]] == [(URL, URL)]
    assert changes["results"][0]["asset"]["status"] == "not_copied"
    assert changes["failure_reason"] is None
    assert changes["completed_at"] == NOW
    assert changes["next_poll_at"] is None


def test_failed_is_applied_keeping_progress() -> None:
    """A failed observation finishes the task with its reason, keeping progress."""
    decision = decide(make_task(status="running", progress=50), failed(), NOW)
    assert decision.outcome == "applied"
    assert decision.changes["status"] == "failed"
    assert decision.changes["progress"] == 50
    assert decision.changes["failure_reason"] == "output_moderation"
    assert decision.changes["error"] == "flagged"
    assert decision.changes["completed_at"] == NOW


def test_pending_straight_to_terminal() -> None:
    """A pending task can finish without ever being seen running."""
    decision = decide(make_task(), succeeded(URL), NOW)
    assert decision.outcome == "applied"
    assert decision.changes["status"] == "succeeded"


def test_duplicate_terminal_is_duplicate() -> None:
    """The same terminal state again is a duplicate and changes nothing."""
    task = make_task(status="succeeded", progress=100, completed_at=NOW - 5)
    decision = decide(task, succeeded(URL), NOW)
    assert decision.outcome == "duplicate"
    assert decision.changes == {}


def test_late_running_after_terminal_is_stale() -> None:
    """A running observation after the task finished is stale."""
    task = make_task(status="succeeded", progress=100)
    decision = decide(task, running(99), NOW)
    assert decision.outcome == "stale"
    assert decision.changes == {}


def test_contradicting_terminal_is_stale() -> None:
    """A different terminal state after the task finished is stale: terminal is final."""
    decision = decide(make_task(status="succeeded", progress=100), failed(), NOW)
    assert decision.outcome == "stale"
    assert decision.changes == {}
    decision = decide(make_task(status="failed"), succeeded(URL), NOW)
    assert decision.outcome == "stale"


def test_wrong_upstream_id_is_rejected() -> None:
    """An observation about another upstream task is rejected, whatever the state."""
    for status in ("pending", "running", "succeeded", "failed"):
        decision = decide(make_task(status=status), succeeded(URL, upstream_id="other"), NOW)
        assert decision.outcome == "rejected"
        assert decision.changes == {}


def test_unknown_upstream_id_is_bound_by_running() -> None:
    """A task that does not know its upstream id yet takes it from the first observation."""
    decision = decide(make_task(upstream_id=None), running(10, upstream_id="16-new"), NOW)
    assert decision.outcome == "applied"
    assert decision.changes["upstream_id"] == "16-new"


def test_unknown_upstream_id_is_bound_by_terminal() -> None:
    """A terminal observation binds the upstream id too."""
    decision = decide(make_task(upstream_id=None), succeeded(URL, upstream_id="16-new"), NOW)
    assert decision.changes["upstream_id"] == "16-new"


def test_known_upstream_id_is_not_rebound() -> None:
    """A task that knows its upstream id does not write it again."""
    decision = decide(make_task(status="running", progress=1), running(50), NOW)
    assert "upstream_id" not in decision.changes


def test_fail_locally_fails_a_live_task() -> None:
    """A local failure fails a pending or running task with the given reason."""
    for status in ("pending", "running"):
        decision = fail_locally(make_task(status=status), "lost", "GrsAI lost it", NOW)
        assert decision.outcome == "applied"
        assert decision.changes["status"] == "failed"
        assert decision.changes["failure_reason"] == "lost"
        assert decision.changes["error"] == "GrsAI lost it"
        assert decision.changes["completed_at"] == NOW
        assert decision.changes["next_poll_at"] is None


def test_fail_locally_on_terminal_is_stale() -> None:
    """A local failure of a finished task is stale and changes nothing."""
    for status in ("succeeded", "failed"):
        decision = fail_locally(make_task(status=status), "timeout", "too old", NOW)
        assert decision.outcome == "stale"
        assert decision.changes == {}


def test_apply_sets_changes() -> None:
    """`apply` writes the decision's changes onto the task."""
    task = apply(make_task(), Decision("applied", {"status": "running", "progress": 9}))
    assert (task.status, task.progress) == ("running", 9)


# --- property -------------------------------------------------------------------------------

_urls = st.sampled_from([URL, "https://file.grsai.test/b.png"])
_upstream = st.sampled_from([UID, UID, UID, "16-other"])
_observations = st.one_of(
    st.builds(running, st.none() | st.integers(0, 100), _upstream),
    st.builds(lambda u, up: succeeded(u, upstream_id=up), _urls, _upstream),
    st.builds(failed, st.sampled_from(["error", "output_moderation", "violation"]), _upstream),
    st.just("local-failure"),
)


@settings(database=None, deadline=None, max_examples=300)
@given(
    bound=st.booleans(),
    start_progress=st.integers(0, 100),
    steps=st.lists(_observations, max_size=25),
)
def test_state_machine_is_monotonic(
    bound: bool, start_progress: int, steps: list[Observation | str]
) -> None:
    """For any sequence of observations: terminal is final and progress never decreases."""
    task = make_task(upstream_id=UID if bound else None, progress=start_progress)
    now = NOW
    for step in steps:
        now += 1
        before = replace(task, results=list(task.results))
        if isinstance(step, Observation):
            decision = decide(task, step, now)
        else:
            decision = fail_locally(task, "lost", "lost", now)
        task = apply(task, decision)
        assert task.progress >= before.progress
        assert 0 <= task.progress <= 100
        if before.terminal:
            assert task.status == before.status
            assert task.results == before.results
            assert task.completed_at == before.completed_at
        if before.status == "running":
            assert task.status != "pending"
        if before.upstream_id is not None:
            assert task.upstream_id == before.upstream_id
        if decision.outcome in ("stale", "rejected", "duplicate"):
            assert (task.status, task.progress) == (before.status, before.progress)
        if task.status == "succeeded":
            assert task.progress == 100
        assert (task.completed_at is not None) == (task.status in TERMINAL)
