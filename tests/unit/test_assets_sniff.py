"""Type detection, dimensions and integrity checks of result files, from real bytes.

The builders here make small but well-formed files of every accepted kind; the other asset
tests import them (`png` above all) to serve real files through fake transports.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest

from service.files.sniff import Kind, integrity_problem, sniff, video_size

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int = 3, height: int = 2, seed: int = 0) -> bytes:
    """A complete RGB PNG whose pixels depend on `seed` (so different seeds hash differently)."""
    rows = b"".join(
        b"\x00" + bytes((x * 7 + y * 13 + seed) % 256 for x in range(width * 3))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# Offset of the first byte of IDAT data: signature (8) + IHDR chunk (12 + 13) + IDAT header (8).
PNG_IDAT_DATA = 8 + 25 + 8


def jpeg(width: int = 40, height: int = 30) -> bytes:
    """SOI, a JFIF APP0 segment, a baseline SOF0 frame header, and EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + components
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def riff_webp(chunk_kind: bytes, payload: bytes) -> bytes:
    """A RIFF/WEBP container holding one chunk (padded to an even size)."""
    chunk = chunk_kind + struct.pack("<I", len(payload)) + payload
    if len(payload) % 2:
        chunk += b"\x00"
    body = b"WEBP" + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8(width: int, height: int) -> bytes:
    """A lossy WebP: VP8 frame tag, start code, 14-bit width and height."""
    frame = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return riff_webp(b"VP8 ", frame)


def webp_vp8l(width: int, height: int) -> bytes:
    """A lossless WebP: signature 0x2f, then width-1 and height-1 in 14 bits each."""
    bits = (width - 1) | ((height - 1) << 14)
    return riff_webp(b"VP8L", b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 6)


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP: flags, reserved bytes, 24-bit canvas width-1 and height-1."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff_webp(b"VP8X", b"\x10\x00\x00\x00" + canvas)


def gif(width: int = 5, height: int = 4) -> bytes:
    """A GIF89a with one 1x1 image and its trailer."""
    screen = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00"
    palette = b"\xff\xff\xff\x00\x00\x00"
    image = b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
    return screen + palette + image + b";"


def box(kind: bytes, payload: bytes) -> bytes:
    """One ISO base-media box with a 32-bit size."""
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def tkhd(width: int, height: int, version: int = 0) -> bytes:
    """A track header box with width and height in 16.16 fixed point as its last 8 bytes."""
    fixed = 76 if version == 0 else 88  # version 1 has 64-bit times and duration
    head = bytes([version]) + b"\x00\x00\x07"
    return box(b"tkhd", head + b"\x00" * fixed + struct.pack(">II", width << 16, height << 16))


def mp4(width: int = 320, height: int = 240, brand: bytes = b"isom", *, version: int = 0) -> bytes:
    """ftyp, a moov with one trak (tkhd + empty mdia) and an mdat."""
    ftyp = box(b"ftyp", brand + b"\x00\x00\x02\x00" + brand + b"mp41")
    trak = box(b"trak", tkhd(width, height, version) + box(b"mdia", b""))
    moov = box(b"moov", box(b"mvhd", b"\x00" * 100) + trak)
    return ftyp + moov + box(b"mdat", b"\x00\x01" * 50)


def problem(data: bytes) -> str | None:
    """`integrity_problem` of `data` as its sniffed kind (which must be detected)."""
    kind = sniff(data)
    assert kind is not None
    return integrity_problem(io.BytesIO(data), kind, len(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(3, 2), Kind("image/png", "png", 3, 2)),
        (png(1000, 1), Kind("image/png", "png", 1000, 1)),
        (jpeg(40, 30), Kind("image/jpeg", "jpg", 40, 30)),
        (webp_vp8(300, 200), Kind("image/webp", "webp", 300, 200)),
        (webp_vp8l(16383, 2), Kind("image/webp", "webp", 16383, 2)),
        (webp_vp8x(5000, 7), Kind("image/webp", "webp", 5000, 7)),
        (gif(5, 4), Kind("image/gif", "gif", 5, 4)),
        (mp4(), Kind("video/mp4", "mp4")),
        (mp4(brand=b"qt  "), Kind("video/quicktime", "mov")),
    ],
    ids=["png", "png-wide", "jpeg", "webp-vp8", "webp-vp8l", "webp-vp8x", "gif", "mp4", "mov"],
)
def test_sniff_detects_kind_and_size(data: bytes, expected: Kind) -> None:
    """Each accepted kind is recognised from its bytes, with its pixel size when cheap."""
    assert sniff(data) == expected


def test_vp8_scale_bits_are_masked() -> None:
    """The two scaling bits above a VP8 frame's 14-bit dimensions are not part of the size."""
    data = bytearray(webp_vp8(300, 200))
    data[27] |= 0xC0  # top bits of the width field
    data[29] |= 0x40  # top bits of the height field
    assert sniff(bytes(data)) == Kind("image/webp", "webp", 300, 200)


def test_jpeg_without_frame_header_has_no_size() -> None:
    """A JPEG head cut before its SOF segment is still a JPEG, of unknown size."""
    assert sniff(jpeg()[:22]) == Kind("image/jpeg", "jpg")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<!doctype html><html><body>expired</body></html>",
        b'{"error": "not found"}',
        b"%PDF-1.7\n" + b"\x00" * 64,
        PNG_SIGNATURE + b"\x00" * 4,  # signature without IHDR
        b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32,
        b"GIF87",
        b"\xff\xd8",  # SOI alone
        b"\x00" * 64,
    ],
    ids=["empty", "html", "json", "pdf", "png-sig-only", "wav", "gif-short", "soi-only", "zeros"],
)
def test_unknown_bytes_are_not_accepted(data: bytes) -> None:
    """Bytes of no accepted kind sniff as None."""
    assert sniff(data) is None


@pytest.mark.parametrize("brand", [b"avif", b"heic", b"mif1"])
def test_heif_images_are_not_taken_for_mp4(brand: bytes) -> None:
    """An ISO-BMFF *image* (AVIF/HEIC brand) is not labelled video/mp4."""
    ftyp = box(b"ftyp", brand + b"\x00\x00\x00\x00" + brand + b"mif1")
    kind = sniff(ftyp + box(b"meta", b"\x00" * 16) + box(b"mdat", b"\x00" * 16))
    assert kind is None or kind.content_type.startswith("image/")


@pytest.mark.parametrize(
    "data",
    [png(), jpeg(), webp_vp8(8, 8), webp_vp8l(8, 8), webp_vp8x(8, 8), gif(), mp4()],
    ids=["png", "jpeg", "vp8", "vp8l", "vp8x", "gif", "mp4"],
)
def test_intact_files_have_no_problem(data: bytes) -> None:
    """A complete file of each kind passes its integrity check."""
    assert problem(data) is None


def test_png_flipped_data_byte_fails_crc() -> None:
    """One changed byte in IDAT data is caught by the chunk CRC."""
    data = bytearray(png(8, 8))
    data[PNG_IDAT_DATA + 2] ^= 0x01
    reason = problem(bytes(data))
    assert reason is not None
    assert "CRC" in reason
    assert "IDAT" in reason


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_png_is_caught(cut: int) -> None:
    """A PNG missing its last bytes (inside IEND or IDAT) is reported truncated."""
    data = png(8, 8)
    reason = problem(data[:-cut])
    assert reason is not None
    assert "truncated" in reason


def test_png_without_iend_is_caught() -> None:
    """A PNG ending cleanly after IDAT, with no IEND chunk, is reported truncated."""
    data = png(4, 4)
    assert problem(data[:-12]) == "PNG has no IEND chunk (truncated)"


def test_png_with_trailing_bytes_is_caught() -> None:
    """Bytes after IEND are reported."""
    assert problem(png() + b"junk") == "data after the PNG end"


def test_jpeg_without_eoi_is_caught() -> None:
    """A JPEG not ending in FF D9 is reported truncated."""
    assert problem(jpeg()[:-2]) == "JPEG has no end marker (truncated)"


def test_gif_without_trailer_is_caught() -> None:
    """A GIF not ending in ';' is reported truncated."""
    assert problem(gif()[:-1]) == "GIF has no trailer (truncated)"


@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_webp_riff_length_mismatch_is_caught(change: str) -> None:
    """A WebP whose size disagrees with its RIFF header is reported."""
    data = webp_vp8(8, 8)
    data = data[:-2] if change == "shorter" else data + b"\x00\x00"
    assert problem(data) == "WebP length does not match its RIFF header"


@pytest.mark.parametrize("change", ["truncated", "trailing"])
def test_mp4_boxes_not_covering_the_file_are_caught(change: str) -> None:
    """An MP4 cut inside its last box, or with bytes after it, is reported."""
    data = mp4()
    data = data[:-10] if change == "truncated" else data + b"\x00" * 5
    assert problem(data) == "MP4 boxes do not cover the file (truncated)"


def test_mp4_large_size_and_to_end_boxes_cover_the_file() -> None:
    """A 64-bit `largesize` box and a final size-0 box (to end of file) are understood."""
    big = struct.pack(">I4sQ", 1, b"free", 16 + 4) + b"\x00" * 4
    to_end = struct.pack(">I4s", 0, b"mdat") + b"\x00" * 33
    assert problem(mp4()[:-108] + big + to_end) is None


def test_mp4_with_many_fragments_is_intact() -> None:
    """A fragmented MP4 with more than 1024 top-level boxes (moof/mdat pairs) is intact."""
    fragments = (box(b"moof", b"\x00" * 8) + box(b"mdat", b"\x00" * 8)) * 600
    assert problem(mp4() + fragments) is None


@pytest.mark.parametrize("version", [0, 1])
def test_video_size_reads_tkhd(version: int) -> None:
    """Width and height come from moov/trak/tkhd (16.16 fixed point), for both tkhd versions."""
    data = mp4(1280, 720, version=version)
    assert video_size(io.BytesIO(data), len(data)) == (1280, 720)


def test_video_size_finds_moov_after_mdat() -> None:
    """A moov placed after the media data is still found by walking the top-level boxes."""
    data = mp4(640, 360)
    ftyp_end = struct.unpack(">I", data[:4])[0]
    moov_end = ftyp_end + struct.unpack(">I", data[ftyp_end : ftyp_end + 4])[0]
    moved = data[:ftyp_end] + data[moov_end:] + data[ftyp_end:moov_end]
    assert video_size(io.BytesIO(moved), len(moved)) == (640, 360)


def test_video_size_skips_tracks_without_size() -> None:
    """An audio track (0x0 tkhd) before the video track is skipped."""
    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00isom")
    audio = box(b"trak", tkhd(0, 0))
    video = box(b"trak", tkhd(1920, 1080))
    data = ftyp + box(b"moov", audio + video)
    assert video_size(io.BytesIO(data), len(data)) == (1920, 1080)


def test_video_size_is_none_without_moov() -> None:
    """A file without a moov box has no readable size."""
    data = box(b"ftyp", b"isom\x00\x00\x02\x00isom") + box(b"mdat", b"\x00" * 20)
    assert video_size(io.BytesIO(data), len(data)) is None
