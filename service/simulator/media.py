"""Real result files, made in memory: valid PNGs and placeholder MP4s."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib

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
