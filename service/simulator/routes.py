"""The GrsAI endpoints: submit (three modes), poll, result files and the account calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from service.simulator.catalog import SubmitPath, find_model, submit_paths
from service.simulator.engine import Simulator, SubmitRequest
from service.simulator.errors import BadRequest, InjectedHTTPError, TaskNotFound, Unauthorized
from service.simulator.faults import StreamStyle
from service.simulator.render import envelope, task_object
from service.simulator.state import JSONObject, Mode
from service.simulator.wire import ConnectionDropped, WireFault, broken_answer

POLL_MODE = "-1"
# Broken submit answers that still create the task (the break happens after GrsAI accepted it).
TASK_MADE: frozenset[WireFault] = frozenset({"truncated", "close"})


def _json_bytes(obj: JSONObject) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def json_object(request: Request) -> JSONObject:
    """The request body as a JSON object, or `BadRequest`."""
    try:
        body: Any = json.loads(await request.body())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadRequest("invalid json") from exc
    if not isinstance(body, dict):
        raise BadRequest("invalid json: expected an object")
    return body


async def _frames(
    queue: asyncio.Queue[JSONObject | None], style: StreamStyle
) -> AsyncIterator[bytes]:
    prefix, end = (b"", b"\n") if style == "bare" else (b"data: ", b"\n\n")
    while (body := await queue.get()) is not None:
        yield prefix + _json_bytes(body) + end


class GrsaiEndpoints:
    """Request handlers bound to one `Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """Every GrsAI route."""
        submits: list[BaseRoute] = [
            Route(sp.path, self._submitter(sp), methods=["POST"]) for sp in submit_paths()
        ]
        return [
            *submits,
            Route("/v1/draw/result", self.result, methods=["POST"]),
            Route("/files/{task_id}/{name}", self.file, methods=["GET", "HEAD"]),
            Route("/client/openapi/getAPIKeyCredits", self.credits, methods=["POST"]),
            Route("/client/common/getModelStatus", self.model_status, methods=["GET"]),
        ]

    def key_is_valid(self, key: str) -> bool:
        """Whether an API key is accepted (exactly the configured one, else any `sk-...`)."""
        expected = self.sim.config.api_key
        return key == expected if expected is not None else key.startswith("sk-") and len(key) > 3

    def _authorize(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.key_is_valid(key.strip()):
            raise Unauthorized

    def _submitter(self, sp: SubmitPath) -> Callable[[Request], Awaitable[Response]]:
        async def submit(request: Request) -> Response:
            return await self.submit(request, sp)

        return submit

    async def submit(self, request: Request, sp: SubmitPath) -> Response:
        """Validate, apply submit-time faults, create the task and answer in its mode."""
        self._authorize(request)
        self.sim.stats.submits += 1
        req = self._parse(await json_object(request), sp, request)
        faults = self.sim.faults_for(req.prompt)
        if faults.slow > 0:
            await asyncio.sleep(faults.slow)
        if faults.http_status is not None:
            raise InjectedHTTPError(faults.http_status)
        if faults.reject:
            raise BadRequest("insufficient credits")
        broken = faults.submit_fault
        if broken is not None and broken not in TASK_MADE:
            self.sim.stats.submit_faults += 1
            return broken_answer(broken, b"")
        task = self.sim.start(req, faults)
        if faults.slowack > 0:
            await asyncio.sleep(faults.slowack)
        if broken is not None:
            self.sim.stats.submit_faults += 1
            task.submit_fault = broken
            return broken_answer(broken, _json_bytes(envelope({"id": task.id})))
        if task.stream is not None:
            style = task.faults.stream
            return StreamingResponse(
                _frames(task.stream, style),
                media_type="text/event-stream" if style == "sse" else "application/json",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(envelope({"id": task.id}))

    def _parse(self, body: JSONObject, sp: SubmitPath, request: Request) -> SubmitRequest:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("model is required")
        spec = sp.model(name)
        if spec is None:
            raise BadRequest(f"model {name} is not supported by {sp.path}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("prompt is required")
        hook = body.get("webHook")
        mode: Mode
        if hook is None or hook == "":
            mode, hook = "stream", None
        elif hook == POLL_MODE:
            mode, hook = "poll", None
        elif isinstance(hook, str) and hook.startswith(("http://", "https://")):
            mode = "callback"
        else:
            raise BadRequest('webHook must be an http(s) URL or "-1"')
        shut = body.get("shutProgress", False)
        if not isinstance(shut, bool):
            raise BadRequest("shutProgress must be a boolean")
        variants = body.get("variants", 1) if spec.max_variants > 1 else 1
        if type(variants) is not int or not 1 <= variants <= spec.max_variants:
            raise BadRequest(f"variants must be an integer from 1 to {spec.max_variants}")
        aspect = body.get("aspectRatio") or body.get("size")
        base = self.sim.config.public_base_url or str(request.base_url)
        return SubmitRequest(
            model=spec,
            prompt=prompt,
            mode=mode,
            webhook=hook,
            shut_progress=shut,
            variants=variants,
            aspect=aspect if isinstance(aspect, str) else None,
            base_url=base,
        )

    async def result(self, request: Request) -> Response:
        """`POST /v1/draw/result`: the current task object, or code -22."""
        self._authorize(request)
        task_id = (await json_object(request)).get("id")
        if not isinstance(task_id, str) or not task_id:
            self.sim.stats.polls += 1
            raise BadRequest("id is required")
        fault = self.sim.poll_fault(task_id)
        if fault == "slow":
            await asyncio.sleep(self.sim.config.poll_slow_seconds)
        try:
            task = self.sim.poll(task_id)
        except TaskNotFound as exc:
            answer = exc.response()
        else:
            body = task_object(task)
            answer = JSONResponse(body if task.faults.unwrapped else envelope(body))
        if fault is None or fault == "slow":
            return answer
        return broken_answer(fault, bytes(answer.body))

    async def file(self, request: Request) -> Response:
        """A result file; 404 when unknown or past the URL lifetime."""
        found = self.sim.file(request.path_params["task_id"], request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        if found.stream is not None:
            headers = {"Content-Length": str(found.size)}
            return StreamingResponse(found.stream, media_type=found.media_type, headers=headers)
        if found.truncate:
            return StreamingResponse(
                _half_then_drop(found.content),
                media_type=found.media_type,
                headers={"Content-Length": str(len(found.content))},
            )
        return Response(found.content, media_type=found.media_type)

    async def credits(self, request: Request) -> Response:
        """`POST /client/openapi/getAPIKeyCredits` with `{"apiKey": ...}`."""
        key = (await json_object(request)).get("apiKey")
        if not isinstance(key, str) or not self.key_is_valid(key):
            raise BadRequest("invalid api key")
        return JSONResponse(envelope({"credits": self.sim.config.credits}))

    async def model_status(self, request: Request) -> Response:
        """`GET /client/common/getModelStatus?model=NAME`."""
        name = request.query_params.get("model", "")
        if not name:
            raise BadRequest("model is required")
        if find_model(name) is None:
            return JSONResponse(envelope({"status": False, "error": "model not found"}))
        return JSONResponse(envelope({"status": True, "error": ""}))


async def _half_then_drop(content: bytes) -> AsyncIterator[bytes]:
    """Half the promised body, then a dropped connection (the client sees a truncated file)."""
    yield content[: len(content) // 2]
    raise ConnectionDropped
