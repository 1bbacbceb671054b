"""Simulator result-file faults: corrupt, truncate, and large videos."""

from __future__ import annotations

import io

import pytest

from service.files.sniff import integrity_problem, sniff, video_size
from service.simulator.errors import BadRequest
from service.simulator.faults import parse_directives
from service.simulator.media import big_mp4, corrupted, png_bytes


async def test_big_mp4_is_a_complete_valid_video_of_the_asked_size() -> None:
    """The streamed MP4 has the announced size, verifies, and carries a 64x36 track header."""
    size, chunks = big_mp4("t/0", 3 * 1024 * 1024 + 17)
    data = b"".join([chunk async for chunk in chunks])
    assert len(data) == size
    kind = sniff(data[:65536])
    assert kind is not None
    assert kind.content_type == "video/mp4"
    assert integrity_problem(io.BytesIO(data), kind, size) is None
    assert video_size(io.BytesIO(data), size) == (64, 36)


def test_corrupted_png_keeps_its_length_and_fails_its_crc() -> None:
    """A corrupted PNG is the same size and is caught by the CRC walk."""
    good = png_bytes(64, 48, (1, 2, 3))
    bad = corrupted(good)
    assert len(bad) == len(good)
    assert bad != good
    kind = sniff(bad)
    assert kind is not None
    assert "CRC" in (integrity_problem(io.BytesIO(bad), kind, len(bad)) or "")


def test_file_fault_directives_parse() -> None:
    """corrupt=N, truncate=N and videomb=MB are read from the prompt."""
    faults = parse_directives("x [sim:corrupt=2] [sim:truncate=1] [sim:videomb=50]")
    assert (faults.corrupt, faults.truncate, faults.videomb) == (2, 1, 50.0)


@pytest.mark.parametrize("bad", ["[sim:corrupt=x]", "[sim:truncate]", "[sim:videomb=99999]"])
def test_bad_file_fault_directives_are_refused(bad: str) -> None:
    """Malformed file-fault directives are a submit error, not ignored."""
    with pytest.raises(BadRequest):
        parse_directives(f"x {bad}")
