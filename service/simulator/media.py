"""Real result files, made in memory: valid PNGs and placeholder MP4s."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import AsyncIterator

DEFAULT_SIZE = (64, 48)
_MAX_SIDE = 64
_RATIO = re.compile(r"^\s*(\d+)\s*[:xX]\s*(\d+)\s*$")


def image_size(aspect: str | None) -> tuple[int, int]:
    """A small width/height with the requested aspect (`16:9` or `1024x1536`), else 64x48."""
    match = _RATIO.match(aspect or "")
    if match is None:
        return DEFAULT_SIZE
    w, h = int(match[1]), int(match[2])
    if w <= 0 or h <= 0:
        return DEFAULT_SIZE
    scale = _MAX_SIDE / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def colour_for(seed: str) -> tuple[int, int, int]:
    """A stable colour derived from a string (the task id and result index)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return digest[0], digest[1], digest[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid 8-bit RGB PNG of one solid colour."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width  # filter byte 0 (None), then the pixels
    idat = zlib.compress(row * height, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4_bytes(label: str) -> bytes:
    """A small placeholder MP4: a valid `ftyp` box, then a `free` box naming the task."""
    ftyp = _box(b"ftyp", b"mp42" + struct.pack(">I", 0) + b"mp42isom")
    return ftyp + _box(b"free", f"grsai-simulator {label}".encode())


_CHUNK = 1 << 20


def big_mp4(label: str, size: int) -> tuple[int, AsyncIterator[bytes]]:
    """A valid MP4 of about `size` bytes (ftyp, a large mdat of filler, a moov with a 64x36
    video track header), streamed in 1 MiB chunks so nothing large is held in memory."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0) + b"isommp42")
    tkhd = _box(b"tkhd", bytes(76) + struct.pack(">II", 64 << 16, 36 << 16))
    moov = _box(b"moov", _box(b"trak", tkhd))
    payload = max(0, size - len(ftyp) - len(moov) - 8)
    header = ftyp + struct.pack(">I", payload + 8) + b"mdat"
    filler = (hashlib.sha256(label.encode()).digest() * (_CHUNK // 32 + 1))[:_CHUNK]

    async def chunks() -> AsyncIterator[bytes]:
        yield header
        left = payload
        while left > 0:
            yield filler[: min(left, _CHUNK)]
            left -= min(left, _CHUNK)
        yield moov

    return len(header) + payload + len(moov), chunks()


def corrupted(data: bytes) -> bytes:
    """The same length with bytes flipped in the middle (a PNG then fails its CRC)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 4]) + data[middle + 4 :]
