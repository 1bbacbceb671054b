"""Reading GrsAI task objects: every documented shape accepted, everything else refused by field."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.errors import InvalidTaskObject
from service.domain.observation import (
    MAX_UPSTREAM_ID,
    Observation,
    ResultFile,
    parse_task_object,
    unwrap_poll_answer,
)

JSON = dict[str, Any]
UID = "16-18ce737e-9692-455d-89a9-be79f437c549"
URL = "https://file.grsai.test/a.png"


def obj(**fields: Any) -> JSON:
    """A running task object with `fields` overriding."""
    return {"id": UID, "status": "running", "progress": 10, "results": None, **fields}


def refused_field(body: Any) -> str:
    """Parse `body`, which must be refused; return the field the refusal names."""
    with pytest.raises(InvalidTaskObject) as caught:
        parse_task_object(body)
    assert caught.value.code == "invalid_payload"
    fields = caught.value.details["fields"]
    assert len(fields) == 1
    name = fields[0]["field"]
    assert isinstance(name, str)
    assert caught.value.message.startswith(f"{name}: ")
    return name


def test_results_with_url_and_content() -> None:
    """`results` items shaped `{url, content}` become result files without dimensions."""
    found = parse_task_object(
        obj(status="succeeded", results=[{"url": URL, "content": "a fox"}], progress=100)
    )
    assert found.status == "succeeded"
    assert found.results == (ResultFile(URL),)
    assert found.terminal


def test_results_with_url_width_height() -> None:
    """`results` items shaped `{url, width, height}` keep their dimensions."""
    item = {"url": URL, "width": 1024, "height": 1536}
    found = parse_task_object(obj(status="succeeded", results=[item]))
    assert found.results == (ResultFile(URL, 1024, 1536),)
    assert found.results[0].to_json() == {"url": URL, "width": 1024, "height": 1536}


def test_sora_items_with_pid_are_read_and_pid_kept_raw() -> None:
    """Sora result items carry `pid`; the URL is read and the item survives in `raw`."""
    item = {"url": "https://v.grsai.test/s.mp4", "pid": "s_68e0b1", "content": ""}
    body = obj(status="succeeded", results=[item, {**item, "url": URL, "pid": "s_2"}])
    found = parse_task_object(body)
    assert [r.url for r in found.results] == ["https://v.grsai.test/s.mp4", URL]
    assert found.raw["results"][0]["pid"] == "s_68e0b1"


def test_top_level_url_width_height() -> None:
    """With no `results`, the result is read from top-level `url`, `width`, `height`."""
    found = parse_task_object(
        obj(status="succeeded", results=None, url=URL, width=1024, height=1024)
    )
    assert found.results == (ResultFile(URL, 1024, 1024),)


def test_top_level_url_used_when_results_list_is_empty() -> None:
    """An empty `results` list falls back to the top-level `url`."""
    found = parse_task_object(obj(status="succeeded", results=[], url=URL))
    assert found.results == (ResultFile(URL),)


def test_results_list_wins_over_top_level_url() -> None:
    """When both are present, `results[*].url` is the result and top-level `url` is ignored."""
    other = "https://file.grsai.test/other.png"
    found = parse_task_object(obj(status="succeeded", results=[{"url": URL}], url=other))
    assert found.results == (ResultFile(URL),)


def test_both_forms_of_one_result_give_one_result() -> None:
    """sora-image's object carries its result at the top level and in `results`: read once."""
    item = {"url": URL, "width": 1024, "height": 1536}
    found = parse_task_object(obj(status="succeeded", results=[item], **item))
    assert found.results == (ResultFile(URL, 1024, 1536),)


def test_items_without_url_are_skipped() -> None:
    """Result items with a null or empty url are skipped, not refused."""
    items = [{"url": None}, {"url": ""}, {"url": URL}]
    found = parse_task_object(obj(status="succeeded", results=items))
    assert found.results == (ResultFile(URL),)


def test_zero_dimensions_read_as_unknown() -> None:
    """A width or height of 0 (or empty) means unknown, not zero pixels."""
    found = parse_task_object(obj(status="succeeded", url=URL, width=0, height=""))
    assert found.results == (ResultFile(URL, None, None),)


def test_failure_reason_is_read() -> None:
    """`failure_reason` and `error` are read from a failed task."""
    found = parse_task_object(
        obj(status="failed", failure_reason="output_moderation", error="flagged by moderation")
    )
    assert found.status == "failed"
    assert found.failure_reason == "output_moderation"
    assert found.error == "flagged by moderation"


def test_fail_reason_alias() -> None:
    """`fail_reason` is accepted as an alias of `failure_reason`."""
    found = parse_task_object(obj(status="failed", fail_reason="input_moderation"))
    assert found.failure_reason == "input_moderation"


def test_failure_reason_preferred_over_alias() -> None:
    """When both spellings are present, `failure_reason` wins."""
    found = parse_task_object(obj(status="failed", failure_reason="error", fail_reason="other"))
    assert found.failure_reason == "error"


def test_failed_without_reason_defaults_to_error() -> None:
    """A failed task with no reason at all gets the reason `error`."""
    found = parse_task_object(obj(status="failed", failure_reason="", error=None))
    assert found.failure_reason == "error"
    assert found.error is None


def test_violation_status_is_a_failure() -> None:
    """The newer `violation` status reads as failed with reason `violation`."""
    found = parse_task_object(obj(status="violation"))
    assert found.status == "failed"
    assert found.failure_reason == "violation"
    assert found.terminal


def test_violation_keeps_an_explicit_reason() -> None:
    """A `violation` with its own failure_reason keeps that reason."""
    found = parse_task_object(obj(status="violation", failure_reason="input_moderation"))
    assert found.failure_reason == "input_moderation"


def test_status_is_case_and_space_tolerant() -> None:
    """Status is read case-insensitively with surrounding spaces ignored."""
    assert parse_task_object(obj(status=" RUNNING ")).status == "running"


def test_unknown_fields_are_kept_raw() -> None:
    """Unknown fields do not break parsing and stay in `raw` unchanged."""
    body = obj(
        task_id="t-1",
        callback_url="http://x.test/h",
        start_time=1700000000,
        end_time=0,
        brand_new={"nested": [1, 2]},
    )
    found = parse_task_object(body)
    assert found.raw == body
    assert found.raw["brand_new"] == {"nested": [1, 2]}


def test_raw_does_not_affect_equality() -> None:
    """Two readings with the same meaning are equal whatever their raw extras."""
    assert parse_task_object(obj(extra=1)) == parse_task_object(obj(extra=2))


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (55, 55), (100, 100), (42.9, 42)])
def test_progress_int_or_float(value: float, expected: int) -> None:
    """Progress may be an int or a float; floats are truncated to an int."""
    assert parse_task_object(obj(progress=value)).progress == expected


def test_progress_may_be_absent() -> None:
    """A task object without progress reads progress as unknown."""
    body = obj()
    del body["progress"]
    assert parse_task_object(body).progress is None


def test_succeeded_progress_is_100() -> None:
    """A succeeded task reads progress 100 whatever it says."""
    assert parse_task_object(obj(status="succeeded", progress=3, url=URL)).progress == 100


def test_null_results_while_running() -> None:
    """`results: null` while running reads as no results."""
    found = parse_task_object(obj(results=None))
    assert found.results == ()
    assert not found.terminal


def test_observation_is_what_the_parser_returns() -> None:
    """The parser returns an `Observation` with the id and status read."""
    found = parse_task_object(obj())
    assert isinstance(found, Observation)
    assert (found.upstream_id, found.status, found.progress) == (UID, "running", 10)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "task", 5, [obj()]])
def test_non_object_refused(body: Any) -> None:
    """A task object that is not a JSON object is refused."""
    with pytest.raises(InvalidTaskObject) as caught:
        parse_task_object(body)
    assert caught.value.code == "invalid_payload"


@pytest.mark.parametrize("upstream_id", [None, 5, 5.0, True, "", ["x"], {"id": "x"}])
def test_missing_or_non_string_id_refused(upstream_id: Any) -> None:
    """A missing, empty or non-string id is refused naming `id`."""
    body = obj(id=upstream_id)
    if upstream_id is None:
        del body["id"]
    assert refused_field(body) == "id"


def test_id_over_128_chars_refused() -> None:
    """An id longer than 128 characters is refused; exactly 128 is accepted."""
    assert parse_task_object(obj(id="x" * MAX_UPSTREAM_ID)).upstream_id == "x" * 128
    assert refused_field(obj(id="x" * (MAX_UPSTREAM_ID + 1))) == "id"


@pytest.mark.parametrize("status", ["done", "pending", "queued", "", "succeed", None, 1, True])
def test_unknown_status_refused(status: Any) -> None:
    """An unknown or non-string status is refused naming `status`."""
    assert refused_field(obj(status=status)) == "status"


@pytest.mark.parametrize("progress", [-1, -0.5, 100.5, 101, True, False, "50", [50], {"p": 1}])
def test_bad_progress_refused(progress: Any) -> None:
    """Progress below 0, above 100, a bool, a string or a container is refused naming it."""
    assert refused_field(obj(progress=progress)) == "progress"


@pytest.mark.parametrize("results", ["https://x.test/a.png", {"url": URL}, 5, True])
def test_results_not_a_list_refused(results: Any) -> None:
    """`results` that is neither a list nor null is refused naming `results`."""
    assert refused_field(obj(results=results)) == "results"


def test_too_many_results_refused() -> None:
    """More than 64 result items are refused."""
    items = [{"url": URL}] * 65
    assert refused_field(obj(status="succeeded", results=items)) == "results"


@pytest.mark.parametrize("item", [URL, 5, None, [URL]])
def test_result_item_not_an_object_refused(item: Any) -> None:
    """A result item that is not an object is refused naming its index."""
    assert refused_field(obj(status="succeeded", results=[{"url": URL}, item])) == "results[1]"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://file.grsai.test/a.png",
        "javascript:alert(1)",
        "/relative/a.png",
        "a.png",
        "//file.grsai.test/a.png",
        "http://",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "https://x.test/" + "a" * 5000,
        7,
    ],
)
def test_non_http_result_urls_refused(url: Any) -> None:
    """Result URLs that are not absolute http(s) URLs are refused naming the item's url."""
    assert refused_field(obj(status="succeeded", results=[{"url": url}])) == "results[0].url"


@pytest.mark.parametrize("url", ["ftp://x.test/a.png", "javascript:alert(1)", "../a.png"])
def test_non_http_top_level_url_refused(url: str) -> None:
    """A bad top-level `url` is refused naming `url`."""
    assert refused_field(obj(status="succeeded", url=url)) == "url"


@pytest.mark.parametrize(
    "extra",
    [{}, {"results": None}, {"results": []}, {"results": [{"url": None}]}, {"url": ""}],
)
def test_succeeded_without_url_refused(extra: JSON) -> None:
    """A succeeded task must carry at least one result URL."""
    assert refused_field(obj(status="succeeded", **extra)) == "results"


@pytest.mark.parametrize(("name", "value"), [("width", "wide"), ("height", -1), ("width", 1e7)])
def test_bad_dimensions_refused(name: str, value: Any) -> None:
    """A width or height that is not a number between 0 and 1000000 is refused naming it."""
    assert refused_field(obj(status="succeeded", results=[{"url": URL, name: value}])) == name


@pytest.mark.parametrize("name", ["failure_reason", "fail_reason", "error"])
def test_non_string_text_fields_refused(name: str) -> None:
    """`failure_reason`, `fail_reason` and `error` must be strings when present."""
    assert refused_field(obj(status="failed", **{name: {"code": 1}})) == name


def test_long_text_fields_are_truncated() -> None:
    """Very long reason and error texts are cut, not refused."""
    found = parse_task_object(obj(status="failed", failure_reason="r" * 999, error="e" * 9999))
    assert found.failure_reason == "r" * 200
    assert found.error is not None
    assert len(found.error) == 4000


# --- poll answers ---------------------------------------------------------------------------


def test_unwrap_wrapped_answer() -> None:
    """A wrapped poll answer yields its code, msg and data."""
    data = obj()
    assert unwrap_poll_answer({"code": 0, "msg": "success", "data": data}) == (0, "success", data)


def test_unwrap_bare_answer() -> None:
    """A bare task object (no envelope) is read as code 0 with the body as data."""
    data = obj()
    assert unwrap_poll_answer(data) == (0, "", data)


def test_unwrap_not_found() -> None:
    """Code -22 comes back with no data."""
    answer = {"code": -22, "msg": "task not found", "data": None}
    assert unwrap_poll_answer(answer) == (-22, "task not found", None)


def test_unwrap_missing_msg() -> None:
    """A wrapped answer without msg reads msg as empty."""
    assert unwrap_poll_answer({"code": -1, "data": None}) == (-1, "", None)


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "ok",
        None,
        {"code": "0", "data": {}},
        {"code": True, "msg": "x"},
        {"code": 0.0, "msg": ""},
    ],
)
def test_unwrap_refuses_unreadable_answers(answer: Any) -> None:
    """A non-object answer or a non-integer code is refused."""
    with pytest.raises(InvalidTaskObject):
        unwrap_poll_answer(answer)
