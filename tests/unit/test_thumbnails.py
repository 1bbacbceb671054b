"""Thumbnails: made with Pillow, upright and small; a poster for a video or an unreadable file;
made once and kept beside the file in the store (a folder or an S3 bucket), gone with it."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.files.s3 import S3AssetStore
from service.files.store import AssetStore, LocalAssetStore
from service.files.thumbs import EDGE, Thumbnails, Unreadable, make_poster, make_thumbnail
from tests.s3server import S3Server

OLD = 1_000_000_000.0


def picture(width: int, height: int, kind: str = "PNG", mode: str = "RGB") -> bytes:
    """An encoded picture of one colour."""
    out = io.BytesIO()
    Image.new(mode, (width, height), "teal").save(out, kind)
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    """The pixel size of an encoded picture (and that it is a JPEG)."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


async def stored(store: AssetStore, data: bytes) -> str:
    """Put `data` in the store; return its hash."""
    staged = store.staging_file()
    staged.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    await store.put(staged, sha)
    return sha


def test_a_picture_shrinks_to_the_edge_keeping_its_shape() -> None:
    """A 1200x600 PNG becomes a 320x160 JPEG; a small one is not enlarged; alpha is flattened."""
    assert size_of(make_thumbnail(picture(1200, 600))) == (EDGE, EDGE // 2)
    assert size_of(make_thumbnail(picture(64, 48))) == (64, 48)
    assert size_of(make_thumbnail(picture(500, 1000, "WEBP", "RGBA"))) == (EDGE // 2, EDGE)


def test_the_exif_orientation_is_applied() -> None:
    """A JPEG stored sideways with EXIF orientation 6 comes out upright (taller than wide)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    Image.new("RGB", (400, 200), "red").save(out, "JPEG", exif=exif)
    assert size_of(make_thumbnail(out.getvalue())) == (EDGE // 2, EDGE)


def test_unreadable_and_huge_pictures_are_refused() -> None:
    """Bytes that are no picture, a truncated one, and one over the pixel limit: `Unreadable`."""
    whole = picture(300, 300)
    for bad in (b"not a picture", whole[: len(whole) // 2]):
        with pytest.raises(Unreadable):
            make_thumbnail(bad)
    out = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(out, "PNG")  # 60 megapixels, a small file
    with pytest.raises(Unreadable, match="too large"):
        make_thumbnail(out.getvalue())


def test_a_poster_is_a_small_jpeg() -> None:
    """A video's poster is a 16:9 JPEG as wide as a thumbnail."""
    assert size_of(make_poster("video/mp4", 3_500_000)) == (EDGE, EDGE * 9 // 16)
    assert size_of(make_poster(None, None)) == (EDGE, EDGE * 9 // 16)


@pytest.fixture(name="s3", scope="module")
def _s3() -> Iterator[S3Server]:
    """One S3 API server for this module's tests (each test makes its own bucket)."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(name="store", params=["local", "s3"])
async def _store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[LocalAssetStore | S3AssetStore]:
    """Each store: the folder, and a bucket of its own on the test S3 server."""
    if request.param == "local":
        yield LocalAssetStore(tmp_path / "assets")
        return
    s3: S3Server = request.getfixturevalue("s3")
    store = S3AssetStore(f"s3://{s3.new_bucket()}/files", tmp_path / "assets", env=s3.env())
    await store.open()
    yield store
    await store.close()


async def test_made_once_then_read_back_and_deleted_with_the_file(
    store: LocalAssetStore | S3AssetStore,
) -> None:
    """The first `get` makes and stores the thumbnail; the next reads it back (the file itself
    gone meanwhile); it is not listed as a stored file; a delete of the file removes it."""
    data = picture(960, 480)
    sha = await stored(store, data)
    thumbs = Thumbnails(store)
    first = await thumbs.get(sha, "image/png", len(data))
    assert size_of(first) == (EDGE, EDGE // 2)
    assert await store.thumbnail(sha) == first
    assert [h async for h in store.iter_hashes()] == [sha]
    assert await store.delete(sha, unused_since=float("inf"))
    assert await store.thumbnail(sha) is None
    await store.put_thumbnail(sha, first)
    assert await thumbs.get(sha, "image/png", len(data)) == first  # read back, not made


async def test_a_video_or_an_unreadable_file_gets_a_poster(
    store: LocalAssetStore | S3AssetStore,
) -> None:
    """A video's thumbnail is its poster, as is an image Pillow cannot read; both are kept."""
    video = await stored(store, b"\x00\x00\x00\x18ftypmp42 not really a movie")
    broken = await stored(store, b"\x89PNG\r\n\x1a\n broken")
    thumbs = Thumbnails(store)
    poster = await thumbs.get(video, "video/mp4", 30)
    assert size_of(poster) == (EDGE, EDGE * 9 // 16)
    assert await store.thumbnail(video) == poster
    assert size_of(await thumbs.get(broken, "image/png", 16)) == (EDGE, EDGE * 9 // 16)


async def test_a_file_over_the_limit_is_not_read(tmp_path: Path) -> None:
    """A picture larger than `max_source_bytes` gets a poster without being read whole."""
    store = LocalAssetStore(tmp_path / "assets")
    data = picture(400, 400)
    sha = await stored(store, data)
    made = await Thumbnails(store, max_source_bytes=len(data) - 1).get(sha, "image/png", len(data))
    assert size_of(made) == (EDGE, EDGE * 9 // 16)
    assert store.thumbnail_path(sha).stat().st_mtime > OLD
