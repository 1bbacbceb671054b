"""Property tests: arbitrary hostile input, in process, never gets a 5xx or moves a task back.

The relay runs in process (`httpx.ASGITransport`) against a GrsAI faked by
`httpx.MockTransport`; one app is built per test function and shared by its examples. Every
answer must be a documented status with the JSON error shape, a 400 callback must leave its task
exactly as it was, and a task's state may only move forward, its terminal state and results
coming only from what the (fake) GrsAI answers to the verification poll.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.api.context import Services
from service.app import Seams, create_app
from service.domain.credentials import SystemEntropy, hash_secret, new_api_key
from service.domain.records import ApiKey, Task
from service.settings import Settings

JSON = dict[str, Any]
RELAY_URL = "http://relay.test"
OWN = "<own upstream id>"  # replaced by the attacked task's GrsAI id when a body is sent
VALID_KEY = "<valid key>"  # replaced by the caller's API key
RECOVERED_ID = "16-recovered-9692-455d-89a9-be79f437c549"
RANK = {"pending": 0, "running": 1, "succeeded": 2, "failed": 2}
FIELD_NAMES = [
    "id", "task_id", "status", "progress", "results", "url", "width", "height",
    "failure_reason", "fail_reason", "error", "start_time", "end_time", "callback_url",
]  # fmt: skip
TASK_FIELDS = [
    "model", "prompt", "callback_url", "metadata", "urls", "url", "firstFrameUrl",
    "lastFrameUrl", "aspectRatio", "imageSize", "size", "variants", "quality", "background",
    "duration", "remixTargetId", "characters", "shutProgress", "webHook",
]  # fmt: skip
FAST = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
STATEFUL = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- strategies ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else `bad` (so that deep states are reached often)."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else good)


good_urls = st.sampled_from(["https://files.grsai.test/0.png", "https://files.grsai.test/1.png"])
bad_urls = st.sampled_from(
    [
        "https://evil.test/forged.png",
        "javascript:alert(1)",
        "ftp://x.test/a.png",
        "file:///etc/passwd",
        "/relative.png",
        "https://",
        "",
    ]
)
urls = mostly(good_urls, bad_urls | json_values)
dimensions = mostly(st.integers(0, 4096), st.integers(-5, 2_000_000) | json_values)
result_items = mostly(
    st.fixed_dictionaries({"url": good_urls}, optional={"width": dimensions, "height": dimensions}),
    st.fixed_dictionaries({}, optional={"url": urls, "content": json_values}) | json_values,
)
texts = mostly(st.none() | st.text(max_size=30), json_values)
task_objects = st.fixed_dictionaries(
    {
        "id": mostly(st.just(OWN), st.just("16-other") | json_values),
        "status": mostly(
            st.sampled_from(["running", "succeeded", "failed", "violation"]),
            st.sampled_from([" RUNNING ", "Succeeded", "done", ""]) | json_values,
        ),
    },
    optional={
        "progress": mostly(st.integers(0, 100), st.integers(-10, 110) | st.floats() | json_values),
        "results": mostly(st.none() | st.lists(result_items, max_size=3), json_values),
        "url": urls,
        "failure_reason": mostly(st.sampled_from(["error", "output_moderation"]), texts),
        "fail_reason": texts,
        "error": texts,
        "extra": json_values,
    },
)
callback_objects = mostly(
    task_objects,
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=8),
)
truths = st.one_of(
    st.builds(lambda p: {"status": "running", "progress": p}, st.integers(0, 99)),
    st.builds(
        lambda n: {
            "status": "succeeded",
            "progress": 100,
            "results": [{"url": f"https://files.grsai.test/{i}.png"} for i in range(n)],
        },
        st.integers(1, 3),
    ),
    st.sampled_from(["error", "output_moderation"]).map(
        lambda r: {"status": "failed", "progress": 40, "failure_reason": r, "error": "upstream"}
    ),
    st.just({"status": "violation", "progress": 0}),
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["nano-banana", "gpt-image-2", "sora-2", "veo3.1-fast", "dall-e"]),
    "prompt": st.text(max_size=40),
    "callback_url": urls,
    "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    "urls": st.lists(urls, max_size=3),
    "variants": st.integers(-1, 4),
    "duration": st.integers(-1, 100),
    "shutProgress": st.booleans(),
}
task_bodies = st.dictionaries(
    st.sampled_from(TASK_FIELDS) | st.text(max_size=8),
    json_values,
    max_size=6,
) | st.fixed_dictionaries(
    {"model": field_values["model"], "prompt": field_values["prompt"]},
    optional={
        name: field_values.get(name, json_values) for name in TASK_FIELDS[2:] if name != "webHook"
    },
)
header_bytes = st.binary(max_size=64).filter(lambda b: not any(c in b for c in b"\r\n\x00"))


# --- the fake GrsAI and the app --------------------------------------------------------------


@dataclass
class FakeGrsai:
    """Answers submits with fresh ids (or a timeout) and polls from `truth` (-22 if unknown)."""

    truth: dict[str, JSON] = field(default_factory=dict)
    web_hooks: list[str] = field(default_factory=list)
    time_out_submits: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request from the relay (result files are gone: 404)."""
        if request.method != "POST":
            return httpx.Response(404)
        body = json.loads(request.content)
        if request.url.path == "/v1/draw/result":
            found = self.truth.get(body["id"])
            if found is None:
                return httpx.Response(200, json={"code": -22, "msg": "not found", "data": None})
            return httpx.Response(200, json={"code": 0, "msg": "success", "data": found})
        self.web_hooks.append(body["webHook"])
        if self.time_out_submits:
            raise httpx.ReadTimeout("no answer", request=request)
        upstream_id = f"16-{len(self.web_hooks):08x}-9692-455d-89a9-be79f437c549"
        self.truth[upstream_id] = {"id": upstream_id, "status": "running", "progress": 0}
        return httpx.Response(200, json={"code": 0, "msg": "success", "data": {"id": upstream_id}})

    def set_truth(self, upstream_id: str, truth: JSON) -> None:
        """What a poll for `upstream_id` answers from now on."""
        self.truth[upstream_id] = {"id": upstream_id, "results": None, **truth}


@dataclass
class Lab:
    """One relay app in process, its fake GrsAI, and a caller's API key."""

    client: httpx.AsyncClient
    services: Services
    grsai: FakeGrsai
    key: str
    standing: tuple[Task, str] | None = None

    def auth(self) -> dict[str, str]:
        """The caller's Authorization header."""
        return {"Authorization": f"Bearer {self.key}"}

    async def task(self, task_id: str) -> Task:
        """The stored task."""
        stored = await self.services.storage.task(task_id)
        assert stored is not None
        return stored

    async def new_task(self, *, bound: bool = True) -> tuple[Task, str]:
        """Submit a task (`bound=False`: the submit times out, so no GrsAI id is known)."""
        self.grsai.time_out_submits = not bound
        body = {"model": "nano-banana", "prompt": "a fox"}
        response = await self.client.post("/v1/tasks", json=body, headers=self.auth())
        self.grsai.time_out_submits = False
        answer = response.json()
        task_id = answer["id"] if bound else answer["error"]["task_id"]
        assert response.status_code == (202 if bound else 503), response.text
        return await self.task(task_id), self.grsai.web_hooks[-1].rsplit("/", 1)[1]

    async def standing_task(self) -> tuple[Task, str]:
        """One task (and its token) shared by every example of a test function."""
        if self.standing is None:
            self.standing = await self.new_task()
        return self.standing

    async def callback(self, token: str, body: bytes, content_type: str) -> httpx.Response:
        """POST a callback body to the token's URL."""
        return await self.client.post(
            f"/webhooks/grsai/{token}", content=body, headers={"Content-Type": content_type}
        )


@pytest.fixture(name="lab")
async def _lab(tmp_path: Path) -> AsyncIterator[Lab]:
    """A callback-mode relay that verifies terminal callbacks, built once per test function."""
    config = Settings(
        database_url=f"sqlite:///{tmp_path}/hostile.db",
        grsai_api_key="sk-test",
        grsai_base_url="http://grsai.test",
        public_base_url=RELAY_URL,
    )
    grsai = FakeGrsai()
    seams = Seams(upstream_transport=httpx.MockTransport(grsai.handle))
    app = create_app(config, seams=seams, run_workers=False)
    async with app.router.lifespan_context(app):
        services = cast(Services, app.state.services)
        made = new_api_key(SystemEntropy())
        key = ApiKey(made.id, "hostile", made.prefix, time.time())
        await services.storage.create_api_key(key, hash_secret(made.secret))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=RELAY_URL) as client:
            yield Lab(client, services, grsai, made.secret)


# --- checks ----------------------------------------------------------------------------------


def check_answer(response: httpx.Response, allowed: dict[int, set[str] | None]) -> Any:
    """The status is one of `allowed`; a 4xx is the JSON error shape with an allowed code."""
    status = response.status_code
    assert status in allowed, f"{status}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if status >= 400:
        error = body["error"]
        assert isinstance(error["message"], str)
        codes = allowed[status]
        assert codes is None or error["code"] in codes, error
    return body


def check_forward(before: Task, after: Task) -> None:
    """`after` is `before` or a later state of it: no step back, terminal is final."""
    assert RANK[after.status] >= RANK[before.status]
    assert after.progress >= before.progress
    if before.upstream_id is not None:
        assert after.upstream_id == before.upstream_id
    if before.terminal:
        kept = ("status", "progress", "results", "failure_reason", "error", "completed_at")
        assert [getattr(after, k) for k in kept] == [getattr(before, k) for k in kept]


def check_terminal_from_poll(task: Task, truth: JSON | None) -> None:
    """A terminal task holds the status and result URLs the verification poll answered."""
    if not task.terminal:
        return
    assert truth is not None, "terminal without any GrsAI truth"
    status = "failed" if truth["status"] == "violation" else truth["status"]
    assert task.status == status
    held = [r.get("upstream_url") or r["url"] for r in task.results]
    assert held == [r["url"] for r in truth.get("results") or []]


def with_own_id(body: Any, upstream_id: str | None) -> bytes:
    """Encode a generated body, putting the task's GrsAI id where the strategy asked for it."""
    if isinstance(body, dict) and body.get("id") == OWN:
        body = {**body, "id": upstream_id or RECOVERED_ID}
    return json.dumps(body).encode()


CALLBACK_ANSWERS: dict[int, set[str] | None] = {200: None, 400: {"invalid_json", "invalid_payload"}}
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "", "application/x-www-form"])


# --- the callback endpoint -------------------------------------------------------------------


@FAST
@given(body=st.binary(max_size=2048), content_type=CONTENT_TYPES)
async def test_callback_with_any_bytes(lab: Lab, body: bytes, content_type: str) -> None:
    """Arbitrary bytes to a valid callback URL: a JSON 400 that leaves the task as it was."""
    task, token = await lab.standing_task()
    response = await lab.callback(token, body, content_type)
    check_answer(response, CALLBACK_ANSWERS)
    if response.status_code == 400:
        assert await lab.task(task.id) == task


@FAST
@given(value=json_values)
async def test_callback_with_any_json_value(lab: Lab, value: Any) -> None:
    """Any JSON value as a callback body: 200 or a JSON 400, and a 400 leaves the task as it was."""
    task, token = await lab.standing_task()
    before = await lab.task(task.id)
    response = await lab.callback(token, json.dumps(value).encode(), "application/json")
    check_answer(response, CALLBACK_ANSWERS)
    after = await lab.task(task.id)
    if response.status_code == 400:
        assert after == before
    check_forward(before, after)


@STATEFUL
@given(truth=truths, bodies=st.lists(callback_objects, min_size=1, max_size=5))
async def test_callbacks_only_move_a_task_forward(lab: Lab, truth: JSON, bodies: list[Any]) -> None:
    """Any run of task-object-like callbacks: no step back, terminal results only from the poll."""
    task, token = await lab.new_task()
    assert task.upstream_id is not None
    lab.grsai.set_truth(task.upstream_id, truth)
    for body in bodies:
        before = await lab.task(task.id)
        response = await lab.callback(token, with_own_id(body, task.upstream_id), "text/plain")
        check_answer(response, CALLBACK_ANSWERS)
        after = await lab.task(task.id)
        if response.status_code == 400:
            assert after == before
        check_forward(before, after)
        check_terminal_from_poll(after, lab.grsai.truth[task.upstream_id])
    event(f"bound task ends {after.status}")


@STATEFUL
@given(truth=truths, bodies=st.lists(callback_objects, min_size=1, max_size=4))
async def test_callbacks_to_an_unbound_task_only_move_it_forward(
    lab: Lab, truth: JSON, bodies: list[Any]
) -> None:
    """A task whose submit timed out is bound by its first good callback, then moves forward."""
    task, token = await lab.new_task(bound=False)
    assert task.upstream_id is None
    lab.grsai.set_truth(RECOVERED_ID, truth)
    for body in bodies:
        before = await lab.task(task.id)
        response = await lab.callback(token, with_own_id(body, None), "application/json")
        check_answer(response, CALLBACK_ANSWERS)
        after = await lab.task(task.id)
        if response.status_code == 400:
            assert after == before
        check_forward(before, after)
        check_terminal_from_poll(after, lab.grsai.truth.get(after.upstream_id or ""))
    event(f"unbound task ends {after.status}, bound={after.upstream_id is not None}")


async def test_unbound_task_refuses_a_lone_surrogate_id(lab: Lab) -> None:
    """A callback whose id is a lone UTF-16 surrogate is a 400 for a task not yet bound."""
    task, token = await lab.new_task(bound=False)
    body = b'{"id": "\\ud800", "status": "running", "progress": 5}'
    response = await lab.callback(token, body, "application/json")
    check_answer(response, {400: {"invalid_json", "invalid_payload"}})
    assert await lab.task(task.id) == task


@FAST
@given(token=st.text(max_size=60).filter(lambda t: "/" not in t), body=st.binary(max_size=256))
async def test_callback_to_any_other_token_is_a_bare_404(lab: Lab, token: str, body: bytes) -> None:
    """Any token but a live one answers the same bare JSON 404."""
    response = await lab.client.post(f"/webhooks/grsai/t{quote(token, safe='')}", content=body)
    answer = check_answer(response, {404: {"not_found"}})
    assert answer == {"error": {"code": "not_found", "message": "not found"}}


# --- the client API --------------------------------------------------------------------------

SUBMIT_ANSWERS: dict[int, set[str] | None] = {
    202: None,
    400: {"invalid_json", "invalid_idempotency_key"},
    409: {"idempotency_in_flight"},
    422: {"validation_failed", "idempotency_key_reused"},
}


@FAST
@given(body=st.binary(max_size=2048))
async def test_submit_with_any_bytes(lab: Lab, body: bytes) -> None:
    """Arbitrary bytes as a submission: a JSON 400 or 422 (or 202 for a valid body)."""
    headers = {**lab.auth(), "Content-Type": "application/json"}
    response = await lab.client.post("/v1/tasks", content=body, headers=headers)
    check_answer(response, SUBMIT_ANSWERS)


@FAST
@given(value=json_values)
async def test_submit_with_any_json_value(lab: Lab, value: Any) -> None:
    """Any JSON value as a submission: a JSON 400 or 422 naming fields."""
    response = await lab.client.post("/v1/tasks", json=value, headers=lab.auth())
    body = check_answer(response, SUBMIT_ANSWERS)
    if response.status_code == 422:
        assert body["error"]["fields"]


@STATEFUL
@given(body=task_bodies, idempotency_key=st.none() | header_bytes)
async def test_submit_with_any_fields(lab: Lab, body: JSON, idempotency_key: bytes | None) -> None:
    """Bodies of known and unknown fields with any values: 202 with a stored task, or a 4xx."""
    headers = {b"Authorization": f"Bearer {lab.key}".encode()}
    if idempotency_key is not None:
        headers[b"Idempotency-Key"] = idempotency_key
    response = await lab.client.post("/v1/tasks", json=body, headers=headers)
    answer = check_answer(response, SUBMIT_ANSWERS)
    event(f"submit answered {response.status_code}")
    if response.status_code == 422 and answer["error"]["code"] == "validation_failed":
        assert all(isinstance(f["field"], str) for f in answer["error"]["fields"])
    if response.status_code == 202:
        stored = await lab.client.get(f"/v1/tasks/{answer['id']}", headers=lab.auth())
        assert (stored.status_code, stored.json()["status"]) == (200, "pending")


@FAST
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["status", "model", "limit", "cursor"]) | st.text(max_size=6),
            st.sampled_from(["running", "50", "0", "201", "djE6MQ", ""]) | st.text(max_size=30),
        ),
        max_size=4,
    ),
    raw=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
)
async def test_list_with_any_query(
    lab: Lab, params: list[tuple[str, str]], raw: str | None
) -> None:
    """Any query string on GET /v1/tasks: a page, a 400 invalid_cursor or a 422."""
    url: httpx.URL | str = "/v1/tasks"
    if raw is not None:
        url = httpx.URL(f"{RELAY_URL}/v1/tasks", query=raw.replace("#", "%23").encode())
    query = httpx.QueryParams(tuple(params)) if params else None
    response = await lab.client.get(url, params=query, headers=lab.auth())
    body = check_answer(response, {200: None, 400: {"invalid_cursor"}, 422: {"validation_failed"}})
    if response.status_code == 200:
        assert isinstance(body["data"], list)


@FAST
@given(task_id=st.text(min_size=1, max_size=80).filter(lambda s: not s.endswith("/")))
async def test_get_any_task_id(lab: Lab, task_id: str) -> None:
    """Any task id on GET /v1/tasks/{id} is a JSON 404 (trailing slashes: see the e2e bug row)."""
    response = await lab.client.get(f"/v1/tasks/t{quote(task_id, safe='')}", headers=lab.auth())
    check_answer(response, {404: {"not_found"}})


@FAST
@given(
    endpoint=st.sampled_from(["submit", "list", "get", "callback"]),
    authorization=st.none() | st.just(VALID_KEY.encode()) | header_bytes,
    content_type=st.none() | st.sampled_from([b"application/json", b"text/plain"]) | header_bytes,
    idempotency_key=st.none() | header_bytes,
    extra=st.dictionaries(
        st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=10),
        header_bytes,
        max_size=3,
    ),
)
async def test_any_headers(
    lab: Lab,
    endpoint: str,
    authorization: bytes | None,
    content_type: bytes | None,
    idempotency_key: bytes | None,
    extra: dict[str, bytes],
) -> None:
    """Any Authorization, Content-Type, Idempotency-Key and extra headers: a documented answer."""
    task, token = await lab.standing_task()
    headers = {k.encode(): v for k, v in extra.items() if k != "host"}
    if authorization is not None:
        valid = authorization == VALID_KEY.encode()
        headers[b"Authorization"] = f"Bearer {lab.key}".encode() if valid else authorization
    if content_type is not None:
        headers[b"Content-Type"] = content_type
    if idempotency_key is not None:
        headers[b"Idempotency-Key"] = idempotency_key
    unauthorized: dict[int, set[str] | None] = {401: {"unauthorized"}}
    if endpoint == "submit":
        submission = {"model": "nano-banana", "prompt": "a fox"}
        response = await lab.client.post("/v1/tasks", json=submission, headers=headers)
        check_answer(response, {**SUBMIT_ANSWERS, **unauthorized, 415: {"unsupported_media_type"}})
    elif endpoint == "list":
        response = await lab.client.get("/v1/tasks", headers=headers)
        check_answer(response, {200: None, **unauthorized})
    elif endpoint == "get":
        response = await lab.client.get(f"/v1/tasks/{task.id}", headers=headers)
        check_answer(response, {200: None, **unauthorized})
    else:
        assert task.upstream_id is not None
        body = {"id": task.upstream_id, "status": "running", "progress": 0}
        response = await lab.client.post(f"/webhooks/grsai/{token}", json=body, headers=headers)
        check_answer(response, CALLBACK_ANSWERS)
