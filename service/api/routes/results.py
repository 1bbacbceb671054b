"""Serving our copies of result files: GET /v1/tasks/{id}/results/{n}.

Streams from the file store, a folder or an S3 bucket (never a whole file in memory), with ETag
(the SHA-256), long-lived private caching, conditional requests (If-None-Match -> 304) and single
byte ranges (Range -> 206, a ranged read of the store), as video players need. With an S3 store
and `ASSET_PRESIGN_SECONDS` > 0 it answers 302 to a presigned URL of the object instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service.api.auth import authenticate
from service.api.context import services
from service.api.errors import error_body
from service.domain.errors import AssetStoreUnavailable, NotFound, RangeNotSatisfiable
from service.files.store import StoreUnavailable

_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")
CACHE_CONTROL = "private, max-age=31536000, immutable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single `bytes=` range; None for the whole file.

    Multiple ranges and unknown units are answered with the whole file (RFC 9110 allows it).
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("empty suffix range", size=size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"range starts beyond the {size}-byte file", size=size)
    return start, end


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def result_ref(request: Request) -> tuple[str, int]:
    """The task id and result number of the path (404 when they cannot be one)."""
    task_id, raw_n = request.path_params["task_id"], request.path_params["n"]
    if len(task_id) > 64 or not (raw_n.isascii() and raw_n.isdigit()) or len(raw_n) > 4:
        raise NotFound("no such result")
    return task_id, int(raw_n)


async def result_file(request: Request) -> Response:
    """The stored copy of result `n`, for the task's owner only."""
    key = await authenticate(request)
    task_id, n = result_ref(request)
    if await services(request).storage.task(task_id, key.id) is None:
        raise NotFound("no such result")
    return await serve_result(request, task_id, n)


async def serve_result(request: Request, task_id: str, n: int) -> Response:
    """Result `n` of `task_id` (whose access the caller checked): the file, a range of it, 304,
    or a redirect to a presigned URL; 404 while it is not stored."""
    svc = services(request)
    asset = await svc.storage.asset(task_id, n)
    if asset is None:
        raise NotFound("no such result")
    if asset.status != "stored" or asset.sha256 is None:
        message = f"result {n} is not stored ({asset.status})"
        if asset.status == "failed":
            raise NotFound(message, code="asset_failed", reason=asset.error)
        if asset.status == "pruned":
            raise NotFound(message, code="asset_pruned", reason=asset.error)
        raise NotFound(message, code="asset_pending", reason=asset.error)
    etag = f'"{asset.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    try:
        seconds = svc.settings.asset_presign_seconds
        kind = asset.content_type or "application/octet-stream"
        presigned = await svc.assets.presign(asset.sha256, seconds, kind) if seconds else None
        if presigned is not None:  # valid `seconds`: the redirect itself must not be cached
            return Response(
                status_code=302, headers={"Location": presigned, "Cache-Control": "no-store"}
            )
        size = await svc.assets.size(asset.sha256)
    except StoreUnavailable as exc:
        raise AssetStoreUnavailable(exc.message, retry_after=5) from exc
    if size is None:
        raise NotFound("stored file is missing", code="asset_missing")
    if_range = request.headers.get("if-range")
    wanted = request.headers.get("range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # RFC 9110 13.1.5: a stale If-Range means "send the whole file"
    try:
        span = parse_range(wanted, size)
    except RangeNotSatisfiable as exc:
        return JSONResponse(
            error_body(exc.code, exc.message, size=size),
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    start, end = span if span is not None else (0, size - 1)
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = svc.assets.read(asset.sha256, start, end) if size else _empty()
    return StreamingResponse(
        body, status_code=status, headers=headers, media_type=asset.content_type
    )


async def _empty() -> AsyncIterator[bytes]:
    yield b""


routes = [Route("/v1/tasks/{task_id}/results/{n}", result_file, methods=["GET"])]
