"""What a file really is, read from its bytes (never from the URL or a header).

Knows PNG, JPEG, WebP, GIF and MP4/MOV, and reads image dimensions (and a video's from its
`tkhd` box when the `moov` box is found by walking the top-level boxes).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Kind:
    """A detected media type and, when cheap to read, its pixel size."""

    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None


def _png(head: bytes) -> Kind | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return Kind("image/png", "png", width, height)
    return None


def _gif(head: bytes) -> Kind | None:
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return Kind("image/gif", "gif", width, height)
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(head: bytes) -> Kind | None:
    if not head.startswith(b"\xff\xd8\xff"):
        return None
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            break
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
        if marker in _SOF and pos + 9 <= len(head):
            height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return Kind("image/jpeg", "jpg", width, height)
        pos += 2 + length
    return Kind("image/jpeg", "jpg")


def _webp(head: bytes) -> Kind | None:
    if not (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return Kind("image/webp", "webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return Kind("image/webp", "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return Kind("image/webp", "webp", width, height)
    return Kind("image/webp", "webp")


_STILL_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"}


def _iso_media(head: bytes) -> Kind | None:
    if head[4:8] != b"ftyp" or len(head) < 16:
        return None
    (size,) = struct.unpack(">I", head[:4])
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if brands & _STILL_IMAGE_BRANDS:
        return None  # AVIF/HEIF stills share MP4's container but are not accepted kinds
    if head[8:12] == b"qt  ":
        return Kind("video/quicktime", "mov")
    return Kind("video/mp4", "mp4")


def sniff(head: bytes) -> Kind | None:
    """Detect the type from the first bytes of a file; None when it is none we accept."""
    for probe in (_png, _jpeg, _webp, _gif, _iso_media):
        kind = probe(head)
        if kind is not None:
            return kind
    return None


def _boxes(f: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO boxes between start and end."""
    found: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(found) < 1_000_000:  # boxes are >= 8 bytes: this ends
        f.seek(pos)
        header = f.read(16)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header[:8])
        payload = pos + 8
        if size == 1 and len(header) == 16:
            (size,) = struct.unpack(">Q", header[8:16])
            payload = pos + 16
        elif size == 0:
            size = end - pos
        if size < 8 or pos + size > end:
            break
        found.append((kind, payload, pos + size))
        pos += size
    return found


def video_size(f: BinaryIO, length: int) -> tuple[int, int] | None:
    """Width and height of the first video track (from `moov/trak/tkhd`), if findable."""
    for kind, start, end in _boxes(f, 0, length):
        if kind != b"moov":
            continue
        for trak, t_start, t_end in _boxes(f, start, end):
            if trak != b"trak":
                continue
            for tkhd, h_start, h_end in _boxes(f, t_start, t_end):
                if tkhd != b"tkhd" or h_end - h_start < 84:
                    continue
                f.seek(h_end - 8)
                width, height = struct.unpack(">II", f.read(8))
                if width and height:
                    return width >> 16, height >> 16
    return None


def _png_problem(f: BinaryIO, length: int) -> str | None:
    """Walk every chunk, checking its CRC, up to an IEND that ends the file."""
    pos = 8
    while pos + 12 <= length:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        if pos + 12 + size > length:
            return "PNG chunk runs past the end of the file (truncated)"
        crc = zlib.crc32(kind)
        remaining = size
        while remaining:
            block = f.read(min(remaining, 1 << 20))
            crc = zlib.crc32(block, crc)
            remaining -= len(block)
        (stored,) = struct.unpack(">I", f.read(4))
        if stored != crc:
            return f"PNG chunk {kind!r} fails its CRC (corrupted)"
        pos += 12 + size
        if kind == b"IEND":
            return None if pos == length else "data after the PNG end"
    return "PNG has no IEND chunk (truncated)"


def _tail(f: BinaryIO, length: int, n: int) -> bytes:
    f.seek(max(0, length - n))
    return f.read(n)


def integrity_problem(f: BinaryIO, kind: Kind, length: int) -> str | None:
    """Why a downloaded file is not a complete, intact file of its kind (None when it is)."""
    if kind.content_type == "image/png":
        return _png_problem(f, length)
    if kind.content_type == "image/jpeg":
        return None if _tail(f, length, 2) == b"\xff\xd9" else "JPEG has no end marker (truncated)"
    if kind.content_type == "image/gif":
        return None if _tail(f, length, 1) == b";" else "GIF has no trailer (truncated)"
    if kind.content_type == "image/webp":
        f.seek(4)
        (riff,) = struct.unpack("<I", f.read(4))
        return None if riff + 8 == length else "WebP length does not match its RIFF header"
    boxes = _boxes(f, 0, length)
    covered = boxes[-1][2] if boxes else 0
    return None if covered == length else "MP4 boxes do not cover the file (truncated)"
