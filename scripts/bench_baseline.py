"""The ceilings for `scripts/bench`: bare Starlette endpoints served exactly like the relay.

`GET /hello` answers a small JSON; `POST /post_noop` reads and parses a JSON body and answers a
small JSON. Both run under uvicorn with the relay's settings (one worker, the same h11 protocol
class with its header deadline, `log_config=None`, no access log, the same GC tuning), so the
relay's figures can be read as a share of what this stack can do at all on the same machine in
the same run.

    python scripts/bench_baseline.py --port 8100
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.server import protocol_class, settle_heap
from service.settings import Settings


async def hello(request: Request) -> JSONResponse:
    """A small JSON answer: the cost of routing and responding."""
    return JSONResponse({"hello": "world"})


async def post_noop(request: Request) -> JSONResponse:
    """Read and parse the JSON body, then answer: the cost of taking a POST."""
    body = json.loads(await request.body())
    return JSONResponse({"ok": True, "keys": len(body)})


def create_app() -> Starlette:
    """The baseline app."""
    return Starlette(
        routes=[
            Route("/hello", hello, methods=["GET"]),
            Route("/post_noop", post_noop, methods=["POST"]),
        ]
    )


def main() -> None:
    """Serve the baseline app on 127.0.0.1 until interrupted."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--port", type=int, required=True)
    ns = top.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings init kwarg
    settle_heap()  # the relay's GC settings too
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=ns.port,
        http=protocol_class(settings.header_timeout),
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
