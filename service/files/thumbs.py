"""Thumbnails of stored result files, made once with Pillow and kept in the file store.

The first request for a file's thumbnail reads the stored file, shrinks it (off the event loop)
and stores the small JPEG beside the file (`AssetStore.put_thumbnail`, a folder or an S3
bucket); every later request, on any replica, reads it back. Two replicas making the same
thumbnail at once write the same bytes.

A video gets a poster instead: no video decoder ships with the relay, so the poster is a
generated picture (a play mark, the file's type and size), not a frame of the video. So does a
file Pillow cannot read, or one too large to decode safely.
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image, ImageDraw, ImageFont, ImageOps

from service.files.store import AssetStore

EDGE = 320  # the longest side of a thumbnail, in pixels
MAX_SOURCE_BYTES = 64 * 1024 * 1024  # larger files get a poster: never read into memory
MAX_PIXELS = 50_000_000  # below Pillow's own bomb limit: a larger picture gets a poster
QUALITY = 80
_BACKGROUND = (32, 36, 44)
_FOREGROUND = (230, 232, 236)
# What Pillow raises on a file it cannot read, a truncated one, or a decompression bomb.
# (UnidentifiedImageError is an OSError.)
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class Unreadable(Exception):
    """Pillow cannot make a thumbnail of this file."""


def make_thumbnail(data: bytes, edge: int = EDGE) -> bytes:
    """A JPEG at most `edge` pixels on its longest side, upright (EXIF orientation applied),
    transparency laid on the dashboard's background; raise `Unreadable` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise Unreadable(f"{width}x{height} is too large to decode")
            image.draft("RGB", (edge, edge))  # JPEG: decode at a reduced scale, much faster
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((edge, edge))
            rgba = upright.convert("RGBA")
            flat = Image.new("RGB", rgba.size, _BACKGROUND)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            flat.save(out, "JPEG", quality=QUALITY, optimize=True)
    except _UNREADABLE as exc:
        raise Unreadable(str(exc) or type(exc).__name__) from exc
    return out.getvalue()


def _size_text(size: int | None) -> str:
    if size is None:
        return ""
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def make_poster(content_type: str | None, size: int | None, edge: int = EDGE) -> bytes:
    """A generated poster: a play mark for a video (a plain frame otherwise), the file's type
    and size. Not a frame of the file: the relay has no video decoder."""
    width, height = edge, edge * 9 // 16
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    kind = (content_type or "application/octet-stream").split(";")[0].strip()
    cx, cy, r = width // 2, height // 2 - 10, height // 6
    if kind.startswith("video/"):
        draw.polygon([(cx - r // 2, cy - r), (cx - r // 2, cy + r), (cx + r, cy)], _FOREGROUND)
    else:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=_FOREGROUND, width=3)
    font = ImageFont.load_default(size=14)
    label = " · ".join(part for part in (kind, _size_text(size)) if part)
    draw.text((cx, height - 22), label, fill=_FOREGROUND, font=font, anchor="mm")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


class Thumbnails:
    """Thumbnails of a store's files: read back when made before, else made and stored."""

    def __init__(self, store: AssetStore, *, max_source_bytes: int = MAX_SOURCE_BYTES) -> None:
        self._store = store
        self._max_source_bytes = max_source_bytes

    async def get(self, sha256: str, content_type: str | None, size: int | None) -> bytes:
        """The thumbnail (or poster) of stored file `sha256`, made and stored on first use.

        Raises the store's `StoreUnavailable` when it cannot be read or written."""
        made = await self._store.thumbnail(sha256)
        if made is not None:
            return made
        picture = None
        kind = (content_type or "").lower()
        if kind.startswith("image/") and size and size <= self._max_source_bytes:
            data = b"".join([chunk async for chunk in self._store.read(sha256, 0, size - 1)])
            try:
                picture = await asyncio.to_thread(make_thumbnail, data)
            except Unreadable:
                picture = None
        if picture is None:
            picture = await asyncio.to_thread(make_poster, content_type, size)
        await self._store.put_thumbnail(sha256, picture)
        return picture
