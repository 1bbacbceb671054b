"""The stored result files of a task, and their thumbnails, served to the dashboard with the
session cookie (an `<img>` or `<video>` cannot send a Bearer header)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.api.context import services
from service.api.dashboard.pages import owned_task
from service.api.dashboard.session import session_from
from service.api.dashboard.views import kind_of
from service.api.routes.results import CACHE_CONTROL, parse_range
from service.domain.errors import AssetStoreUnavailable, NotFound
from service.domain.records import Asset
from service.files.store import StoreUnavailable
from service.files.thumbs import Thumbnails


async def _stored(request: Request) -> Asset:
    """The path's stored copy, of a task of the session's key; 404 otherwise."""
    session = await session_from(request)
    task = await owned_task(request, session)
    raw_n = request.path_params["n"]
    if not (raw_n.isascii() and raw_n.isdigit() and len(raw_n) <= 4):
        raise NotFound("no such result")
    n = int(raw_n)
    asset = await services(request).storage.asset(task.id, n)
    entry = task.results[n] if n < len(task.results) else {}
    if asset is None or asset.sha256 is None or asset.status != "stored" or not kind_of(entry):
        raise NotFound("no such stored image or video")
    return asset


async def result_file(request: Request) -> Response:
    """GET /dashboard/tasks/{id}/files/{n}: the stored file (single byte ranges for video)."""
    asset = await _stored(request)
    assert asset.sha256 is not None  # `_stored` checked
    store = services(request).assets
    try:
        size = await store.size(asset.sha256)
    except StoreUnavailable as exc:
        raise AssetStoreUnavailable(exc.message, retry_after=5) from exc
    if size is None:
        raise NotFound("stored file is missing", code="asset_missing")
    span = parse_range(request.headers.get("range"), size)  # 416 as an error page
    start, end = span if span is not None else (0, size - 1)
    headers = {
        "etag": f'"{asset.sha256}"',
        "cache-control": CACHE_CONTROL,
        "accept-ranges": "bytes",
        "content-length": str(end - start + 1 if size else 0),
    }
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    body = store.read(asset.sha256, start, end) if size else _empty()
    return StreamingResponse(
        body, status_code=206 if span else 200, headers=headers, media_type=asset.content_type
    )


async def thumbnail(request: Request) -> Response:
    """GET /dashboard/tasks/{id}/thumbs/{n}: a small JPEG, made once and stored (a poster for
    a video)."""
    asset = await _stored(request)
    assert asset.sha256 is not None  # `_stored` checked
    try:
        data = await Thumbnails(services(request).assets).get(
            asset.sha256, asset.content_type, asset.bytes
        )
    except StoreUnavailable as exc:
        raise AssetStoreUnavailable(exc.message, retry_after=5) from exc
    return Response(data, media_type="image/jpeg", headers={"cache-control": CACHE_CONTROL})


async def _empty() -> AsyncIterator[bytes]:
    yield b""
