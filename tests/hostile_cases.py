"""Hostile input for grsai-relay: the case table, and a raw HTTP/1.1 client to send it.

The table is data: each `Case` names an endpoint, a method, headers and a body (static bytes, a
body built from the live `Target`, a chunked stream or a lying Content-Length) and the answer
the relay must give. `{token}`, `{task_id}`, `{key}` ... in paths and header values, and
`{upstream_id}` / `{other_upstream_id}` in callback bodies, are filled from the `Target` at run
time. The raw client (`exchange`) writes exactly the bytes asked for, so malformed paths,
non-ASCII headers and bodies without a Content-Length reach the server as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

WEBHOOK_LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES (the default)
API_LIMIT = 256 * 1024  # API_MAX_BODY_BYTES the hostile relay runs with
METADATA_LIMIT = 16 * 1024  # METADATA_MAX_BYTES (the default)
ACK = {"code": 0, "msg": "success"}
SETUP_PROGRESS = 30  # the target task is running at this progress when the table starts
OMIT = object()  # a field value meaning "leave the field out"
X_URL = "https://x.example/a.png"
EVIL_URL = "https://evil.example/fake.png"


@dataclass(frozen=True)
class Target:
    """The live values a case is filled from: the attacked task, a second task, keys."""

    token: str
    task_id: str
    upstream_id: str
    other_token: str
    other_task_id: str
    other_upstream_id: str
    key: str
    other_key: str
    revoked_key: str

    def fill(self, text: str) -> str:
        """Replace `{name}` placeholders by this target's values."""
        for name, value in asdict(self).items():
            text = text.replace("{" + name + "}", value)
        return text


BodyMaker = Callable[[Target], bytes]


@dataclass(frozen=True)
class Chunked:
    """A body streamed with Transfer-Encoding: chunked (no Content-Length), `total` bytes."""

    total: int
    chunk: int = 64 * 1024


@dataclass(frozen=True)
class Declared:
    """A Content-Length of `length` of which only `sent` is ever written."""

    length: int | str
    sent: bytes = b"{"


Body = bytes | BodyMaker | Chunked | Declared | None


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    name: str
    method: str
    path: str | bytes
    status: int
    code: str | None = None  # error.code of a 4xx; None for the 200 no-op acknowledgement
    body: Body = None  # None: no body and no Content-Length
    headers: tuple[tuple[str, str | bytes], ...] = ()
    field: str | None = None  # error.fields must name this field (or an item of it)
    detail: str | None = None  # error must carry this extra key (e.g. known_models)
    oracle: str | None = None  # cases of one group must answer byte-identical bodies
    bug: str | None = None  # the relay gets this wrong today (run as a strict xfail)


@dataclass
class RawResponse:
    """What came back on the wire."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


# --- building the table ----------------------------------------------------------------------


def cb(**fields: Any) -> BodyMaker:
    """A callback body for the target task (`running`, progress 60) with `fields` changed.

    Unchanged, the body would be a legitimate transition (30 -> 60), so a case that is wrongly
    accepted shows up as a changed task. String values may use `{upstream_id}` placeholders.
    """

    def make(target: Target) -> bytes:
        body: dict[str, Any] = {"id": target.upstream_id, "status": "running", "progress": 60}
        for name, value in fields.items():
            if value is OMIT:
                body.pop(name, None)
            else:
                body[name] = target.fill(value) if isinstance(value, str) else value
        return json.dumps(body).encode()

    return make


def raw_cb(template: str) -> BodyMaker:
    """A callback body written by hand (for text JSON cannot express), placeholders filled."""
    return lambda target: target.fill(template).encode()


def raw_progress(text: str) -> BodyMaker:
    """A `running` callback for the target whose progress is `text`, written as is."""
    return raw_cb('{"id":"{upstream_id}","status":"running","progress":' + text + "}")


def padded_cb(size: int) -> BodyMaker:
    """A duplicate `running` callback padded with an extra field to exactly `size` bytes."""

    def make(target: Target) -> bytes:
        head = f'{{"id":"{target.upstream_id}","status":"running","progress":{SETUP_PROGRESS},'
        head += '"pad":"'
        tail = '"}'
        return (head + "x" * (size - len(head) - len(tail)) + tail).encode()

    return make


def task_body(**fields: Any) -> bytes:
    """A POST /v1/tasks body (valid as it stands) with `fields` changed."""
    body: dict[str, Any] = {"model": "nano-banana", "prompt": "hostile [sim:drop]"}
    for name, value in fields.items():
        if value is OMIT:
            body.pop(name, None)
        else:
            body[name] = value
    return json.dumps(body).encode()


JSON_TYPE = ("Content-Type", "application/json")
AUTH = ("Authorization", "Bearer {key}")


def hook(
    name: str,
    status: int,
    code: str | None,
    body: Body,
    field: str | None = None,
    *,
    token: str = "{token}",  # noqa: S107  # a placeholder, not a password
    oracle: str | None = None,
    headers: tuple[tuple[str, str | bytes], ...] = (JSON_TYPE,),
    bug: str | None = None,
) -> Case:
    """A POST to the callback endpoint."""
    path = f"/webhooks/grsai/{token}"
    return Case(
        f"callback: {name}",
        "POST",
        path,
        status,
        code,
        body,
        headers,
        field=field,
        oracle=oracle,
        bug=bug,
    )


def api(
    name: str,
    method: str,
    path: str | bytes,
    status: int,
    code: str | None,
    body: Body = None,
    *,
    headers: tuple[tuple[str, str | bytes], ...] | None = None,
    field: str | None = None,
    detail: str | None = None,
    oracle: str | None = None,
    bug: str | None = None,
) -> Case:
    """A client-API request; by default with the caller's key and a JSON content type."""
    if headers is None:
        headers = (AUTH, JSON_TYPE) if body is not None else (AUTH,)
    return Case(name, method, path, status, code, body, headers, field, detail, oracle, bug)


def submit(
    name: str,
    status: int,
    code: str | None,
    body: Body,
    field: str | None = None,
    *,
    detail: str | None = None,
    extra: tuple[tuple[str, str | bytes], ...] = (),
    content_type: str = "application/json",
    bug: str | None = None,
) -> Case:
    """POST /v1/tasks with the caller's key and (by default) a JSON content type."""
    return api(
        f"submit: {name}",
        "POST",
        "/v1/tasks",
        status,
        code,
        body,
        headers=(AUTH, ("Content-Type", content_type), *extra),
        field=field,
        detail=detail,
        bug=bug,
    )


def _token_cases() -> list[Case]:
    legit = cb()  # a real transition if the token were accepted
    wrong = "A" * 43
    cases = [
        hook("wrong token", 404, "not_found", legit, token=wrong),
        hook("truncated token", 404, "not_found", legit, token="{token_short}"),
        hook("token plus a char", 404, "not_found", legit, token="{token}A"),
        hook("token twice", 404, "not_found", legit, token="{token}{token}"),
        hook("another task's token mangled", 404, "not_found", legit, token="{other_token}A"),
        hook("10 KB token", 404, "not_found", legit, token="A" * 10_240),
        hook("percent-encoded UTF-8 token", 404, "not_found", legit, token="%C3%A9" * 43),
        hook("token + percent-encoded UTF-8", 404, "not_found", legit, token="{token}%C3%A9"),
        hook("token + encoded NUL", 404, "not_found", legit, token="{token}%00"),
        hook("invalid percent escape", 404, "not_found", legit, token="%ZZ{token}"),
        hook("overlong UTF-8 escape of '/'", 404, "not_found", legit, token="%C0%AF{token}"),
        hook("dot-dot", 404, "not_found", legit, token=".."),
        hook("encoded dot-dot", 404, "not_found", legit, token="%2E%2E"),
    ]
    cases = [replace(c, oracle="token404") for c in cases]
    routed = [
        hook("path traversal ..%2F", 404, "not_found", legit, token="..%2F..%2Fv1%2Ftasks"),
        hook("traversal then token", 404, "not_found", legit, token="..%2F{token}"),
        hook("empty token", 404, "not_found", legit, token=""),
        hook("token in a sub-path", 404, "not_found", legit, token="x/{token}"),
    ]
    routed = [replace(c, oracle="token404-route") for c in routed]
    methods = [
        Case(
            "callback: GET with the valid token",
            "GET",
            "/webhooks/grsai/{token}",
            405,
            "method_not_allowed",
            oracle="token405",
        ),
        Case(
            "callback: GET with a wrong token",
            "GET",
            f"/webhooks/grsai/{wrong}",
            405,
            "method_not_allowed",
            oracle="token405",
        ),
        Case(
            "callback: PUT with the valid token",
            "PUT",
            "/webhooks/grsai/{token}",
            405,
            "method_not_allowed",
            legit,
            (JSON_TYPE,),
        ),
    ]
    redirects = [
        hook("valid token + trailing slash", 404, "not_found", legit, token="{token}/"),
        hook("'..%2F' (a redirect to '..')", 404, "not_found", legit, token="..%2F"),
    ]
    return cases + routed + methods + redirects


def _callback_body_cases() -> list[Case]:
    bad, inv = "invalid_payload", "invalid_json"
    nested_list = b"[" * 100_000 + b"]" * 100_000
    nested_obj = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    cases = [
        hook("empty body", 400, inv, b""),
        hook("whitespace body", 400, inv, b" \r\n\t "),
        hook("2 MiB declared, not sent", 413, "payload_too_large", Declared(2 * 1024 * 1024)),
        hook("limit + 1 declared", 413, "payload_too_large", Declared(WEBHOOK_LIMIT + 1)),
        hook(
            "chunked stream over the limit",
            413,
            "payload_too_large",
            Chunked(WEBHOOK_LIMIT + 300_000),
        ),
        hook("Content-Length of 20 digits", 400, "bad_request", Declared("9" * 20)),
        hook("invalid UTF-8", 400, inv, b'{"id":"\xff\xfe","status":"running"}'),
        hook("UTF-16 body", 400, inv, lambda t: json.dumps({"id": t.upstream_id}).encode("utf-16")),
        hook("UTF-8 BOM", 400, inv, lambda t: b"\xef\xbb\xbf" + cb()(t)),
        hook("invalid JSON", 400, inv, b'{"id": "x", "status": running}'),
        hook("truncated JSON", 400, inv, b'{"id": "x", "status": "run'),
        hook("trailing garbage", 400, inv, lambda t: cb()(t) + b" x"),
        hook("two objects", 400, inv, lambda t: cb()(t) + cb()(t)),
        hook("JSON array", 400, inv, lambda t: b"[" + cb()(t) + b"]"),
        hook("empty array", 400, inv, b"[]"),
        hook("scalar 42", 400, inv, b"42"),
        hook("scalar string", 400, inv, b'"x"'),
        hook("scalar null", 400, inv, b"null"),
        hook("scalar true", 400, inv, b"true"),
        hook("100000 nested lists", 400, inv, nested_list),
        hook("100000 nested objects", 400, inv, nested_obj),
        hook(
            "duplicate keys",
            400,
            inv,
            raw_cb('{"id":"{upstream_id}","status":"running","status":"failed"}'),
        ),
        hook("NaN", 400, inv, raw_progress("NaN")),
        hook("Infinity", 400, inv, raw_progress("Infinity")),
        hook("-Infinity", 400, inv, raw_progress("-Infinity")),
        hook("1e999", 400, inv, raw_progress("1e999")),
        hook("5000-digit integer", 400, inv, raw_progress("9" * 5000)),
        hook("lone surrogate id", 400, inv, raw_cb('{"id":"\\ud800","status":"running"}')),
        hook("lone surrogate extra", 400, inv, raw_cb('{"id":"{upstream_id}","x":"\\udfff"}')),
        hook("65 nested levels", 400, inv, raw_cb('{"id":"{upstream_id}","x":' + _nest(65) + "}")),
        hook("4000-digit progress", 400, bad, raw_progress("9" * 4000), "progress"),
        hook("id missing", 400, bad, cb(id=OMIT), "id"),
        hook("id as number", 400, bad, cb(id=42), "id"),
        hook("id as list", 400, bad, cb(id=["{upstream_id}"]), "id"),
        hook("id null", 400, bad, cb(id=None), "id"),
        hook("id empty", 400, bad, cb(id=""), "id"),
        hook("id of 129 chars", 400, bad, cb(id="x" * 129), "id"),
        hook("id of another task", 400, bad, cb(id="{other_upstream_id}")),
        hook("id with a prefix", 400, bad, cb(id=" {upstream_id}")),
        hook("token of another task, this task's id", 400, bad, cb(), token="{other_token}"),
        hook("status missing", 400, bad, cb(status=OMIT), "status"),
        hook("status as number", 400, bad, cb(status=1), "status"),
        hook("status as list", 400, bad, cb(status=["running"]), "status"),
        hook("status unknown 'done'", 400, bad, cb(status="done"), "status"),
        hook("status empty", 400, bad, cb(status=""), "status"),
        hook(
            "succeeded without results", 400, bad, cb(status="succeeded", progress=100), "results"
        ),
        hook("progress as string", 400, bad, cb(progress="60"), "progress"),
        hook("progress as bool", 400, bad, cb(progress=True), "progress"),
        hook("progress -1", 400, bad, cb(progress=-1), "progress"),
        hook("progress 101", 400, bad, cb(progress=101), "progress"),
        hook("progress 1e300", 400, bad, cb(progress=1e300), "progress"),
        hook("progress as list", 400, bad, cb(progress=[60]), "progress"),
        hook("results as object", 400, bad, cb(results={"url": X_URL}), "results"),
        hook("results as string", 400, bad, cb(results=X_URL), "results"),
        hook("results as number", 400, bad, cb(results=1), "results"),
        hook("results item as string", 400, bad, cb(results=[X_URL]), "results[0]"),
        hook(
            "results 65 items",
            400,
            bad,
            cb(results=[{"url": f"https://x.example/{n}.png"} for n in range(65)]),
            "results",
        ),
        hook("result url as number", 400, bad, cb(results=[{"url": 42}]), "results[0].url"),
        hook(
            "result url javascript:",
            400,
            bad,
            cb(results=[{"url": "javascript:alert(1)"}]),
            "results[0].url",
        ),
        hook(
            "result width as string", 400, bad, cb(results=[{"url": X_URL, "width": "9"}]), "width"
        ),
        hook(
            "result height negative", 400, bad, cb(results=[{"url": X_URL, "height": -1}]), "height"
        ),
        hook("url javascript:", 400, bad, cb(url="javascript:alert(1)"), "url"),
        hook("url ftp://", 400, bad, cb(url="ftp://x.example/a.png"), "url"),
        hook("url relative", 400, bad, cb(url="/results/a.png"), "url"),
        hook("url file:///etc/passwd", 400, bad, cb(url="file:///etc/passwd"), "url"),
        hook("url data:", 400, bad, cb(url="data:image/png;base64,AAAA"), "url"),
        hook("url without host", 400, bad, cb(url="https://"), "url"),
        hook("url as number", 400, bad, cb(url=7), "url"),
        hook("url of 5000 chars", 400, bad, cb(url="https://x.example/" + "a" * 5000), "url"),
        hook("failure_reason as number", 400, bad, cb(failure_reason=3), "failure_reason"),
        hook("error as object", 400, bad, cb(error={"msg": "x"}), "error"),
    ]
    progress = SETUP_PROGRESS
    no_ops = [
        hook("stale progress (no-op)", 200, None, cb(progress=10)),
        hook("same progress (no-op)", 200, None, cb(progress=progress)),
        hook("progress null (no-op)", 200, None, cb(progress=None)),
        hook("fractional progress (no-op)", 200, None, cb(progress=progress + 0.9)),
        hook("status in capitals (no-op)", 200, None, cb(status=" RUNNING ", progress=progress)),
        hook(
            "running with results (no-op)",
            200,
            None,
            cb(progress=progress, results=[{"url": EVIL_URL}]),
        ),
        hook(
            "forged succeeded (not believed)",
            200,
            None,
            cb(status="succeeded", progress=100, results=[{"url": EVIL_URL}]),
        ),
        hook(
            "forged top-level url (not believed)",
            200,
            None,
            cb(status="succeeded", progress=100, url=EVIL_URL),
        ),
        hook(
            "forged failed (not believed)",
            200,
            None,
            cb(status="failed", failure_reason="error", error="forged"),
        ),
        hook("forged violation (not believed)", 200, None, cb(status="violation")),
        hook(
            "text/plain, extra fields (no-op)",
            200,
            None,
            cb(progress=progress, extra={"x": [1, {"y": None}]}),
            headers=(("Content-Type", "text/plain"),),
        ),
        hook("no content type (no-op)", 200, None, cb(progress=progress), headers=()),
        hook("body exactly at the limit (no-op)", 200, None, padded_cb(WEBHOOK_LIMIT)),
        hook("64 nested levels (no-op)", 200, None, raw_cb(DEEP_64)),
    ]
    return cases + no_ops


def _auth_cases() -> list[Case]:
    endpoints = [
        ("POST", "/v1/tasks", task_body()),
        ("GET", "/v1/tasks", None),
        ("GET", "/v1/tasks/{task_id}", None),
    ]
    headers: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = [
        ("no Authorization", ()),
        ("'Bearer' alone", (("Authorization", "Bearer"),)),
        ("'Bearer' and spaces", (("Authorization", "Bearer    "),)),
        ("Basic credentials", (("Authorization", "Basic dXNlcjpwYXNz"),)),
        ("other scheme", (("Authorization", "Token {key}"),)),
        ("key without scheme", (("Authorization", "{key}"),)),
        ("key with a suffix", (("Authorization", "Bearer {key}x"),)),
        ("key and more words", (("Authorization", "Bearer {key} {key}"),)),
        ("10 KB key", (("Authorization", "Bearer grk_" + "A" * 10_240),)),
        ("non-ASCII key", (("Authorization", "Bearer grk_\u00e9\u00e8".encode()),)),
        ("latin-1 key", (("Authorization", b"Bearer grk_\xe9" + b"A" * 42),)),
        ("revoked key", (("Authorization", "Bearer {revoked_key}"),)),
        ("a GrsAI key", (("Authorization", "Bearer sk-e2e-upstream"),)),
    ]
    cases = []
    for label, auth in headers:
        for method, path, body in endpoints:
            extra: tuple[tuple[str, str | bytes], ...] = (JSON_TYPE,) if body else ()
            cases.append(
                api(f"auth: {label} ({method} {path})", method, path, 401, "unauthorized",
                    body, headers=auth + extra)
            )  # fmt: skip
    return cases


def _submit_cases() -> list[Case]:
    inv, val = "invalid_json", "validation_failed"
    big = "x" * 100_000
    nested_meta = b'{"model":"nano-banana","prompt":"x","metadata":' + b'{"a":' * 30_000
    nested_meta += b"1" + b"}" * 30_001
    cases = [
        submit("empty body", 400, inv, b""),
        submit("invalid JSON", 400, inv, b'{"model": nano-banana}'),
        submit("invalid UTF-8", 400, inv, b'{"model":"nano-banana","prompt":"\xff"}'),
        submit("JSON array", 400, inv, b"[" + task_body() + b"]"),
        submit("JSON scalar", 400, inv, b"42"),
        submit("JSON null", 400, inv, b"null"),
        submit("NaN in a field", 400, inv, b'{"model":"nano-banana","prompt":"x","variants":NaN}'),
        submit(
            "duplicate keys", 400, inv, b'{"model":"nano-banana","model":"sora-2","prompt":"x"}'
        ),
        submit("30000 nested metadata", 400, inv, nested_meta),
        submit("over the limit, declared", 413, "payload_too_large", Declared(API_LIMIT + 1)),
        submit("over the limit, chunked", 413, "payload_too_large", Chunked(API_LIMIT + 100_000)),
        submit("model as number", 422, val, task_body(model=42), "model"),
        submit("model missing", 422, val, task_body(model=OMIT), "model"),
        submit("model empty", 422, val, task_body(model=""), "model"),
        submit(
            "model unknown", 422, val, task_body(model="dall-e-3"), "model", detail="known_models"
        ),
        submit("model of 101 chars", 422, val, task_body(model="m" * 101), "model"),
        submit("prompt missing", 422, val, task_body(prompt=OMIT), "prompt"),
        submit("prompt empty", 422, val, task_body(prompt=""), "prompt"),
        submit("prompt of 100k chars", 422, val, task_body(prompt=big), "prompt"),
        submit("prompt as number", 422, val, task_body(prompt=1), "prompt"),
        submit("prompt null", 422, val, task_body(prompt=None), "prompt"),
        submit("prompt as list", 422, val, task_body(prompt=["x"]), "prompt"),
        submit("urls as string", 422, val, task_body(urls=X_URL), "urls"),
        submit("urls item as number", 422, val, task_body(urls=[1]), "urls"),
        submit("urls 17 items", 422, val, task_body(urls=[X_URL] * 17), "urls"),
        submit("variants '2'", 422, val, task_body(model="gpt-image-2", variants="2"), "variants"),
        submit("variants 3", 422, val, task_body(model="gpt-image-2", variants=3), "variants"),
        submit("variants 0", 422, val, task_body(model="gpt-image-2", variants=0), "variants"),
        submit(
            "variants true", 422, val, task_body(model="gpt-image-2", variants=True), "variants"
        ),
        submit("variants 1.5", 422, val, task_body(model="gpt-image-2", variants=1.5), "variants"),
        submit("duration -1", 422, val, task_body(model="sora-2", duration=-1), "duration"),
        submit("duration '10'", 422, val, task_body(model="sora-2", duration="10"), "duration"),
        submit("duration 10**20", 422, val, task_body(model="sora-2", duration=10**20), "duration"),
        submit("shutProgress 'false'", 422, val, task_body(shutProgress="false"), "shutProgress"),
        submit("aspectRatio as number", 422, val, task_body(aspectRatio=16), "aspectRatio"),
        submit("aspectRatio banana", 422, val, task_body(aspectRatio="banana"), "aspectRatio"),
        submit(
            "aspectRatio of another model",
            422,
            val,
            task_body(model="nano-banana-pro", aspectRatio="1:8"),
            "aspectRatio",
        ),
        submit("duration 12", 422, val, task_body(model="sora-2", duration=12), "duration"),
        submit("imageSize not taken", 422, val, task_body(imageSize="1K"), "imageSize"),
        submit(
            "size WxH out of range",
            422,
            val,
            task_body(model="gpt-image-2-vip", aspectRatio="9999x9999"),
            "aspectRatio",
        ),
        submit(
            "characters as object",
            422,
            val,
            task_body(model="sora-2", characters={"a": 1}),
            "characters",
        ),
        submit("metadata as list", 422, val, task_body(metadata=[1, 2]), "metadata"),
        submit("metadata as string", 422, val, task_body(metadata="{}"), "metadata"),
        submit(
            "metadata over 16 KB",
            422,
            val,
            task_body(metadata={"a": "x" * METADATA_LIMIT}),
            "metadata",
        ),
        submit(
            "callback_url javascript:",
            422,
            val,
            task_body(callback_url="javascript:alert(1)"),
            "callback_url",
        ),
        submit(
            "callback_url ftp://",
            422,
            val,
            task_body(callback_url="ftp://x.example/hook"),
            "callback_url",
        ),
        submit(
            "callback_url with userinfo",
            422,
            val,
            task_body(callback_url="https://u:p@x.example/hook"),
            "callback_url",
        ),
        submit("callback_url relative", 422, val, task_body(callback_url="/hook"), "callback_url"),
        submit(
            "callback_url without host",
            422,
            val,
            task_body(callback_url="https:///hook"),
            "callback_url",
        ),
        submit(
            "callback_url of 3000 chars",
            422,
            val,
            task_body(callback_url="https://x.example/" + "a" * 3000),
            "callback_url",
        ),
        submit("callback_url as number", 422, val, task_body(callback_url=1), "callback_url"),
        submit("unknown field", 422, val, task_body(colour="red"), "colour"),
        submit("webHook field", 422, val, task_body(webHook="https://evil.example/"), "webHook"),
        submit("webHook -1", 422, val, task_body(webHook="-1"), "webHook"),
        submit("parameter the model does not take", 422, val, task_body(duration=10), "duration"),
        submit("text/plain", 415, "unsupported_media_type", task_body(), content_type="text/plain"),
        submit(
            "form encoded",
            415,
            "unsupported_media_type",
            b"model=nano-banana&prompt=x",
            content_type="application/x-www-form-urlencoded",
        ),
        submit(
            "multipart",
            415,
            "unsupported_media_type",
            b"--b\r\n\r\nx\r\n--b--",
            content_type="multipart/form-data; boundary=b",
        ),
        submit(
            "Idempotency-Key of 256 chars",
            400,
            "invalid_idempotency_key",
            task_body(),
            extra=(("Idempotency-Key", "k" * 256),),
        ),
        submit(
            "Idempotency-Key non-ASCII",
            400,
            "invalid_idempotency_key",
            task_body(),
            extra=(("Idempotency-Key", "order-\u00e9".encode()),),
        ),
        submit(
            "Idempotency-Key with a space",
            400,
            "invalid_idempotency_key",
            task_body(),
            extra=(("Idempotency-Key", "a b"),),
        ),
        submit(
            "Idempotency-Key empty",
            400,
            "invalid_idempotency_key",
            task_body(),
            extra=(("Idempotency-Key", ""),),
        ),
    ]
    surrogates = [
        submit(
            "metadata with a lone surrogate", 400, inv, _json_text('"metadata":{"k":"\\udfff"}')
        ),
        submit("metadata key a lone surrogate", 400, inv, _json_text('"metadata":{"\\ud800":1}')),
        submit(
            "characters with a lone surrogate", 400, inv, _json_text('"characters":["\\ud800"]')
        ),
        submit("aspectRatio a lone surrogate", 400, inv, _json_text('"aspectRatio":"\\udc00x"')),
        submit("metadata nested 65 deep", 400, inv, _json_text('"metadata":' + _nest(65))),
    ]
    bugs = [
        submit("prompt only whitespace", 422, val, task_body(prompt="   \t "), "prompt"),
        submit(
            "callback_url port out of range",
            422,
            val,
            task_body(callback_url="https://x.example:99999/hook"),
            "callback_url",
        ),
        submit(
            "callback_url port not a number",
            422,
            val,
            task_body(callback_url="https://x.example:port/hook"),
            "callback_url",
        ),
    ]
    return cases + surrogates + bugs


def _nest(depth: int) -> str:
    """An object nested `depth` levels deep."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


DEEP_64 = '{"id":"{upstream_id}","status":"running","x":' + _nest(63) + "}"


def _json_text(fields: str) -> bytes:
    """A submission body with extra `fields` written as raw JSON text."""
    return ('{"model":"nano-banana","prompt":"hostile [sim:drop]",' + fields + "}").encode()


def _read_cases() -> list[Case]:
    val, cur = "validation_failed", "invalid_cursor"

    def b64(text: bytes) -> str:
        import base64

        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    def cursor(**changes: object) -> str:
        fields = {"v": 2, "seq": 5, "status": None, "model": None, "limit": 50, **changes}
        return b64(json.dumps(fields).encode())

    def listing(name: str, query: str, status: int, code: str, field: str | None = None) -> Case:
        return api(f"list: {name}", "GET", f"/v1/tasks?{query}", status, code, field=field)

    return [
        listing("status unknown", "status=done", 422, val, "status"),
        listing("status empty", "status=", 422, val, "status"),
        listing("status NUL", "status=%00", 422, val, "status"),
        listing("status non-ASCII", "status=%C3%A9", 422, val, "status"),
        listing("limit garbage", "limit=abc", 422, val, "limit"),
        listing("limit 0", "limit=0", 422, val, "limit"),
        listing("limit 201", "limit=201", 422, val, "limit"),
        listing("limit -1", "limit=-1", 422, val, "limit"),
        listing("limit 1.5", "limit=1.5", 422, val, "limit"),
        listing("limit 30 digits", "limit=" + "9" * 30, 422, val, "limit"),
        listing("limit Arabic-Indic digits", "limit=%D9%A5", 422, val, "limit"),
        listing("limit repeated, last bad", "limit=5&limit=abc", 422, val, "limit"),
        listing("model of 101 chars", "model=" + "m" * 101, 422, val, "model"),
        listing("model empty", "model=", 422, val, "model"),
        listing("cursor garbage", "cursor=!!!", 400, cur),
        listing("cursor base64 of junk", "cursor=" + b64(b"junk junk"), 400, cur),
        listing("cursor of the old form", "cursor=" + b64(b"v1:5"), 400, cur),
        listing("cursor negative", "cursor=" + cursor(seq=-5), 400, cur),
        listing("cursor other version", "cursor=" + cursor(v=3), 400, cur),
        listing("cursor 19 digits", "cursor=" + cursor(seq=10**19), 400, cur),
        listing("cursor seq true", "cursor=" + cursor(seq=True), 400, cur),
        listing("cursor unknown status", "cursor=" + cursor(status="done"), 400, cur),
        listing("cursor limit 201", "cursor=" + cursor(limit=201), 400, cur),
        listing("cursor extra key", "cursor=" + cursor(admin=True), 400, cur),
        listing("cursor with another filter", "status=failed&cursor=" + cursor(), 400, cur),
        listing("cursor not UTF-8", "cursor=" + b64(b"\xff\xfe\xfd"), 400, cur),
        listing("cursor non-ASCII", "cursor=%C3%A9", 400, cur),
        listing("cursor bad padding", "cursor=a", 400, cur),
        listing("cursor of 10 KB", "cursor=" + "A" * 10_240, 400, cur),
        api("get: 10 KB task id", "GET", "/v1/tasks/" + "t" * 10_240, 404, "not_found"),
        api("get: non-ASCII task id", "GET", "/v1/tasks/task_%C3%A9", 404, "not_found"),
        api("get: task id + NUL", "GET", "/v1/tasks/{task_id}%00", 404, "not_found"),
        api("get: dot-dot task id", "GET", "/v1/tasks/..", 404, "not_found"),
        api("get: traversal in task id", "GET", "/v1/tasks/..%2F..%2Fhealthz", 404, "not_found"),
        api(
            "get: another key's task",
            "GET",
            "/v1/tasks/{task_id}",
            404,
            "not_found",
            headers=(("Authorization", "Bearer {other_key}"),),
        ),
        api("get: task id of a callback token", "GET", "/v1/tasks/{token}", 404, "not_found"),
        api("get: upstream id as task id", "GET", "/v1/tasks/{upstream_id}", 404, "not_found"),
    ]


def _routing_cases() -> list[Case]:
    nf, na = "not_found", "method_not_allowed"
    paths = ["/", "/v1", "/v2/tasks", "/webhooks", "/webhooks/grsai", "/.env", "/_sim/stats",
             "/v1/tasks/{task_id}/cancel", "/v1/drawings", "/healthz/x"]  # fmt: skip
    # (GrsAI's own paths, /v1/draw/* and /v1/video/*, are served in GrsAI's shapes: their
    # hostile input is covered by tests/unit/test_grsai_api.py)
    cases = [api(f"route: GET {p}", "GET", p, 404, nf) for p in paths]
    cases += [
        api("route: POST /v1/paint/x", "POST", "/v1/paint/x", 404, nf, task_body()),
        api("method: DELETE /v1/tasks", "DELETE", "/v1/tasks", 405, na),
        api("method: PUT /v1/tasks", "PUT", "/v1/tasks", 405, na, task_body()),
        api("method: PATCH /v1/tasks/{id}", "PATCH", "/v1/tasks/{task_id}", 405, na, b"{}"),
        api("method: DELETE /v1/tasks/{id}", "DELETE", "/v1/tasks/{task_id}", 405, na),
        api("method: POST /v1/tasks/{id}", "POST", "/v1/tasks/{task_id}", 405, na, task_body()),
        api("method: POST /healthz", "POST", "/healthz", 405, na, b"{}"),
        api("method: DELETE /readyz", "DELETE", "/readyz", 405, na),
        api("method: OPTIONS /v1/tasks", "OPTIONS", "/v1/tasks", 405, na),
        api("method: TRACE /healthz", "TRACE", "/healthz", 405, na),
        # httptools (the default parser) refuses a method it does not know, before routing
        api("method: made-up FOO", "FOO", "/v1/tasks", 400, "bad_request"),
        api("slash: GET /v1/tasks/", "GET", "/v1/tasks/", 404, nf),
    ]
    # refused by the HTTP parser before the app sees them: the same JSON 400 all the same
    protocol = [
        api(
            "protocol: raw UTF-8 in the path",
            "POST",
            b"/webhooks/grsai/\xc3\xa9",
            400,
            "bad_request",
            b"{}",
            headers=(JSON_TYPE,),
        ),
        api(
            "protocol: Content-Length 'abc'",
            "POST",
            "/webhooks/grsai/{token}",
            400,
            "bad_request",
            Declared("abc"),
            headers=(JSON_TYPE,),
        ),
        api("protocol: space in the path", "GET", b"/v1/ta sks", 400, "bad_request"),
    ]
    return cases + protocol


def hostile_cases() -> list[Case]:
    """Every case of the table."""
    return (
        _token_cases()
        + _callback_body_cases()
        + _auth_cases()
        + _submit_cases()
        + _read_cases()
        + _routing_cases()
    )


# --- checking an answer ----------------------------------------------------------------------


def problems(case: Case, response: RawResponse) -> list[str]:
    """Everything wrong with `response` as the answer to `case` (empty when it is right)."""
    found: list[str] = []
    if response.status != case.status:
        found.append(f"status {response.status}, expected {case.status}")
    if "application/json" not in response.headers.get("content-type", ""):
        found.append(f"content-type {response.headers.get('content-type')!r} is not JSON")
        return found
    try:
        body = response.json()
    except ValueError:
        return [*found, f"body is not JSON: {response.body[:120]!r}"]
    if case.status == 200:
        if body != ACK:
            found.append(f"200 body {body!r} is not the acknowledgement")
        return found
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return [*found, f"no error.code/error.message in {body!r}"]
    if error.get("code") != case.code:
        found.append(f"error.code {error.get('code')!r}, expected {case.code!r}")
    if case.field is not None:
        names = [f.get("field") for f in error.get("fields") or [] if isinstance(f, dict)]
        if not any(_names_field(n, case.field) for n in names):
            found.append(f"error.fields {names!r} does not name {case.field!r}")
    if case.detail is not None and case.detail not in error:
        found.append(f"error has no {case.detail!r}")
    return found


def _names_field(name: Any, wanted: str) -> bool:
    return isinstance(name, str) and (
        name == wanted or name.startswith((wanted + ".", wanted + "[")) or name.endswith(wanted)
    )


# --- the raw HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Wire:
    """A request rendered to bytes: the head, then the body plan."""

    head: bytes
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)


def render(case: Case, target: Target, port: int) -> Wire:
    """The exact bytes `case` sends to the relay on `port`."""
    filled = dict(asdict(target), token_short=target.token[:-1])
    path = case.path
    if isinstance(path, str):
        for name, value in filled.items():
            path = path.replace("{" + name + "}", value)
        path_bytes = path.encode("ascii")
    else:
        path_bytes = path
    lines = [case.method.encode() + b" " + path_bytes + b" HTTP/1.1", b"Host: 127.0.0.1:%d" % port]
    for name, value in case.headers:
        raw = value if isinstance(value, bytes) else target.fill(value).encode("utf-8")
        lines.append(name.encode() + b": " + raw)
    wire = Wire(b"")
    body = case.body
    if isinstance(body, Chunked):
        lines.append(b"Transfer-Encoding: chunked")
        piece = b"x" * body.chunk
        sent = 0
        while sent < body.total:
            data = piece[: body.total - sent]
            wire.chunks.append(b"%x\r\n" % len(data) + data + b"\r\n")
            sent += len(data)
        wire.chunks.append(b"0\r\n\r\n")
    elif isinstance(body, Declared):
        lines.append(b"Content-Length: " + str(body.length).encode())
        wire.body = body.sent
    elif body is not None:
        data = body if isinstance(body, bytes) else body(target)
        lines.append(b"Content-Length: %d" % len(data))
        wire.body = data
    wire.head = b"\r\n".join(lines) + b"\r\n\r\n"
    return wire


async def _send(writer: asyncio.StreamWriter, wire: Wire, answered: asyncio.Event) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(wire.head + wire.body)
        await writer.drain()
        for chunk in wire.chunks:
            if answered.is_set():
                return
            writer.write(chunk)
            await writer.drain()


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one HTTP/1.1 response (Content-Length, chunked or close-delimited body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)


async def exchange(port: int, wire: Wire, *, within: float = 30.0) -> RawResponse:
    """Send `wire` on a fresh connection to 127.0.0.1:`port` and read the answer.

    The body is written while the answer is awaited, and writing stops once the server has
    answered (it may refuse an oversized body early). `within` only bounds a hang.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024 * 1024)
    answered = asyncio.Event()
    sender = asyncio.create_task(_send(writer, wire, answered))
    try:
        async with asyncio.timeout(within):
            try:
                response = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise AssertionError(f"connection closed without an answer: {exc!r}") from exc
        answered.set()
        return response
    except TimeoutError as exc:
        raise AssertionError(f"no answer within {within} s: the server hangs") from exc
    finally:
        answered.set()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
