"""Client code written the way GrsAI's own documentation writes it: plain, synchronous httpx.

GrsAI documents three ways to get a result back (docs/grsai-api.md, "The `webHook` field"):

- stream: submit without `webHook` and read the answer's `data: {task}` lines; GrsAI's own
  stream example takes `url`, `width`, `height` from the last line (its plugin reads
  `results[0].url`, else `url`);
- callback: submit with a `webHook` URL and receive the task object POSTed there;
- poll: submit with `webHook: "-1"`, then `POST /v1/draw/result` with `{"id": ...}` until
  `data.status` is final, reading `code`, `data.status` and `data.results[].url`.

Each function takes only a base URL and an API key, so the same code runs unchanged against the
simulator and against anything else that speaks GrsAI (the relay, once it does).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

JSON = dict[str, Any]
FINAL = ("succeeded", "failed", "violation")


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


def stream_task(base_url: str, api_key: str, path: str, payload: JSON, timeout: float = 60) -> JSON:
    """Submit without `webHook`, read every `data:` line of the answer; return the last task."""
    last: JSON | None = None
    with httpx.stream(
        "POST", base_url + path, headers=_headers(api_key), json=payload, timeout=timeout
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[len("data:") :])
    if last is None:
        raise RuntimeError("the stream ended without a data: line")
    return last


def first_result(task: JSON) -> tuple[str, int | None, int | None]:
    """`results[0]`'s url, width and height, else the top-level ones (GrsAI's plugin)."""
    found = task.get("results") or [task]
    return found[0]["url"], found[0].get("width"), found[0].get("height")


def submit(base_url: str, api_key: str, path: str, payload: JSON, web_hook: str) -> str:
    """Submit with a `webHook` (a URL, or "-1" to poll); return GrsAI's task id."""
    response = httpx.post(
        base_url + path, headers=_headers(api_key), json={**payload, "webHook": web_hook}
    )
    response.raise_for_status()
    body = response.json()
    if body["code"] != 0:
        raise RuntimeError(f"submit refused: {body['msg']}")
    task_id: str = body["data"]["id"]
    return task_id


def poll_task(
    base_url: str, api_key: str, task_id: str, interval: float = 2.0, timeout: float = 60
) -> JSON:
    """`POST /v1/draw/result` with `{"id": ...}` until `data.status` is final; return `data`.

    A just-submitted id may answer `code: -22` for a moment: that is asked again.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.post(
            base_url + "/v1/draw/result", headers=_headers(api_key), json={"id": task_id}
        )
        body = response.json()
        if body["code"] == 0 and body["data"]["status"] in FINAL:
            data: JSON = body["data"]
            return data
        if body["code"] not in (0, -22):
            raise RuntimeError(f"poll refused: {body['msg']}")
        time.sleep(interval)
    raise TimeoutError(f"task {task_id} did not finish within {timeout} s")


def result_urls(data: JSON) -> list[str]:
    """Every result URL of a finished task, read as GrsAI's poll example reads them."""
    return [result["url"] for result in data["results"]]


class CallbackReceiver:
    """The small web server a GrsAI user runs at their `webHook` URL (loopback here).

    It keeps every POSTed task object and answers `{"code":0,"msg":"success"}`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.bodies: list[JSON] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                task = json.loads(self.rfile.read(length))
                with receiver._arrived:
                    receiver.bodies.append(task)
                    receiver._arrived.notify_all()
                answer = b'{"code":0,"msg":"success"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads `bodies`, not the access log."""

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The `webHook` URL to submit with."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/grsai/callback"

    def final(self, task_id: str, timeout: float = 60) -> JSON:
        """The first callback that reports `task_id` finished."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for task in self.bodies:
                    if task.get("id") == task_id and task.get("status") in FINAL:
                        return task
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no final callback for {task_id} within {timeout} s")
                self._arrived.wait(left)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
