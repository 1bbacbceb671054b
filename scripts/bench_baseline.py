"""The ceilings for `scripts/bench`: stock Starlette endpoints on stock `uvicorn[standard]`.

`GET /hello` answers a small JSON; `POST /post_noop` reads and parses a JSON body and answers a
small JSON. Nothing of the project is imported: this is what a user would otherwise run. It is
served by a plain `uvicorn.run(app, host, port, access_log=False, log_level="warning")` with
uvicorn's defaults otherwise (one worker, `http="auto"`: httptools, `loop="auto"`: uvloop, as
`uvicorn[standard]` installs them) and no GC tuning, so the relay's figures read as a share of
what a stock app does on the same machine in the same run.

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
    uvicorn.run(create_app(), host="127.0.0.1", port=ns.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
