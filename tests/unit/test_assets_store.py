"""The local content-addressed file store: staging, atomic put, range reads, guarded delete."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from service.files import store as store_module
from service.files.store import LocalAssetStore

DATA = bytes(range(256)) * 4  # 1024 bytes, every byte value, so any misplaced range shows
SHA = hashlib.sha256(DATA).hexdigest()
OLD = 1_000_000_000.0  # an mtime long before anything the test does


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path / "assets")


def stage(store: LocalAssetStore, data: bytes) -> Path:
    """A staged file holding `data`."""
    staged = store.staging_file()
    staged.write_bytes(data)
    return staged


async def put(store: LocalAssetStore, data: bytes) -> str:
    """Stage and put `data`; return its hash."""
    sha = hashlib.sha256(data).hexdigest()
    await store.put(stage(store, data), sha)
    return sha


async def read(store: LocalAssetStore, sha: str, start: int, end: int) -> bytes:
    """Every byte `read` yields for the range."""
    return b"".join([chunk async for chunk in store.read(sha, start, end)])


def stored_files(store: LocalAssetStore) -> list[Path]:
    """Every file outside the staging directory."""
    staging = store.root / "tmp"
    return sorted(p for p in store.root.rglob("*") if p.is_file() and p.parent != staging)


def test_staging_files_are_fresh_and_inside_the_store(store: LocalAssetStore) -> None:
    """Each staging file is new, empty and in root/tmp (same filesystem: rename is atomic)."""
    first, second = store.staging_file(), store.staging_file()
    assert first != second
    assert first.parent == second.parent == store.root / "tmp"
    assert first.name.startswith("dl-")
    assert first.stat().st_size == 0


async def test_put_moves_the_staged_file_under_its_hash(store: LocalAssetStore) -> None:
    """put renames the staged file to root/ab/cd/<sha>; the staging directory is left empty."""
    staged = stage(store, DATA)
    await store.put(staged, SHA)
    final = store.root / SHA[:2] / SHA[2:4] / SHA
    assert store.path(SHA) == final
    assert final.read_bytes() == DATA
    assert not staged.exists()
    assert list((store.root / "tmp").iterdir()) == []
    assert await store.size(SHA) == len(DATA)


async def test_put_is_idempotent_and_touches_the_kept_file(store: LocalAssetStore) -> None:
    """Putting the same content twice keeps one file, drops the second stage, refreshes mtime."""
    await put(store, DATA)
    os.utime(store.path(SHA), (OLD, OLD))
    second = stage(store, DATA)
    await store.put(second, SHA)
    assert stored_files(store) == [store.path(SHA)]
    assert store.path(SHA).read_bytes() == DATA
    assert not second.exists()
    assert store.path(SHA).stat().st_mtime > OLD  # reuse shields the file from prune


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../etc/passwd",
        SHA.upper(),
        SHA[:-1],
        SHA + "0",
        "g" * 64,
        SHA[:32] + "/" + SHA[33:],
        SHA + "\n",
    ],
    ids=["empty", "traversal", "upper", "short", "long", "non-hex", "slash", "newline"],
)
async def test_path_refuses_names_that_are_not_sha256(store: LocalAssetStore, name: str) -> None:
    """Only a lowercase 64-digit hex name maps to a path; size() of anything else is None."""
    with pytest.raises(ValueError, match="sha256"):
        store.path(name)
    assert await store.size(name) is None


async def test_size_of_a_missing_file_is_none(store: LocalAssetStore) -> None:
    """A well-formed hash that is not stored has no size."""
    assert await store.size("0" * 64) is None


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 1023), (0, 0), (0, 9), (10, 1023), (1023, 1023), (300, 700), (100, 5000)],
)
async def test_read_returns_exactly_the_range(store: LocalAssetStore, start: int, end: int) -> None:
    """read(start, end) yields bytes [start, end] inclusive (clipped at the end of the file)."""
    await put(store, DATA)
    assert await read(store, SHA, start, end) == DATA[start : end + 1]


async def test_read_streams_in_chunks(
    store: LocalAssetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range longer than CHUNK arrives in CHUNK-sized pieces (never the whole file at once)."""
    monkeypatch.setattr(store_module, "CHUNK", 100)
    await put(store, DATA)
    chunks = [chunk async for chunk in store.read(SHA, 5, 354)]
    assert [len(c) for c in chunks] == [100, 100, 100, 50]
    assert b"".join(chunks) == DATA[5:355]


async def test_delete_removes_a_file_unused_since_the_cutoff(store: LocalAssetStore) -> None:
    """A file last touched before `unused_since` is removed with its empty fan-out directory."""
    await put(store, DATA)
    os.utime(store.path(SHA), (OLD, OLD))
    assert await store.delete(SHA, unused_since=OLD) is False  # touched at the cutoff: kept
    assert await store.delete(SHA, unused_since=OLD + 1) is True
    assert not store.path(SHA).exists()
    assert not store.path(SHA).parent.exists()
    assert await store.size(SHA) is None
    assert await store.delete(SHA, unused_since=OLD + 1) is False  # already gone


async def test_delete_keeps_a_file_reused_after_the_cutoff(store: LocalAssetStore) -> None:
    """A file put again (reused) after `unused_since` survives delete."""
    await put(store, DATA)
    os.utime(store.path(SHA), (OLD, OLD))
    await put(store, DATA)  # the same result downloaded for another task
    assert await store.delete(SHA, unused_since=OLD + 1) is False
    assert store.path(SHA).read_bytes() == DATA


async def test_delete_leaves_neighbours_in_the_fan_out_directory(store: LocalAssetStore) -> None:
    """Removing one file keeps another that shares its directory."""
    await put(store, DATA)
    neighbour = SHA[:4] + "f" * 60
    await store.put(stage(store, b"other"), neighbour)
    os.utime(store.path(SHA), (OLD, OLD))
    assert await store.delete(SHA, unused_since=OLD + 1) is True
    assert store.path(neighbour).read_bytes() == b"other"


async def test_clear_staging_removes_leftover_downloads(store: LocalAssetStore) -> None:
    """Staged files left by a crash are removed and counted; stored files are untouched."""
    await put(store, DATA)
    for _ in range(3):
        stage(store, b"half a download")
    assert store.clear_staging() == 3
    assert list((store.root / "tmp").iterdir()) == []
    assert stored_files(store) == [store.path(SHA)]
    assert store.clear_staging() == 0


def test_store_creates_its_directories(tmp_path: Path) -> None:
    """A store on a missing directory creates it and its staging directory."""
    root = tmp_path / "deep" / "assets"
    LocalAssetStore(root)
    assert (root / "tmp").is_dir()


async def test_clear_staging_spares_downloads_still_being_written(store: LocalAssetStore) -> None:
    """With an age, only staged files untouched that long go: another replica's live ones stay."""
    old, fresh = stage(store, b"crashed"), stage(store, b"in progress")
    os.utime(old, (OLD, OLD))
    assert store.clear_staging(older_than=60.0, now=OLD + 61) == 1
    assert [p.name for p in (store.root / "tmp").iterdir()] == [fresh.name]
