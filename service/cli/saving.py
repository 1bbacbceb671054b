"""Saving a task's result files into a folder: the relay's stored copies when it has them, with
sensible names, and never over an existing file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from service.cli.client import CommandFailed, RelayClient

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")
MAX_NAMES = 1000


def source(client: RelayClient, task_id: str, n: int, entry: dict[str, Any]) -> str | None:
    """Where result `n` is fetched from: our stored copy (asked of the relay we talk to, whatever
    base URL the task names it with), else GrsAI's URL."""
    if (entry.get("asset") or {}).get("status") == "stored" and entry.get("url"):
        return f"{client.task_url(task_id)}/results/{n}"
    for field in ("upstream_url", "url"):
        url = entry.get(field)
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
    return None


def extension(content_type: str | None, url: str) -> str:
    """The file's extension from its type, else from its URL's path, else `.bin`."""
    if content_type:
        known = EXTENSIONS.get(content_type.split(";")[0].strip().lower())
        if known:
            return known
    suffix = PurePosixPath(urlsplit(url).path).suffix
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ".bin"


def free_name(folder: Path, stem: str, suffix: str, staged: Path) -> Path:
    """Link `staged` to `folder/stem.suffix`, or `stem-2.suffix`, ... the first name not taken
    (a hard link never replaces a file, even one made a moment ago); return the name used."""
    for k in range(1, MAX_NAMES + 1):
        target = folder / (f"{stem}{suffix}" if k == 1 else f"{stem}-{k}{suffix}")
        try:
            os.link(staged, target)
        except FileExistsError:
            continue
        return target
    raise CommandFailed(f"{folder}: {MAX_NAMES} files named {stem}* already; choose another --out")


async def save_results(client: RelayClient, task: dict[str, Any], folder: Path) -> list[Path]:
    """Download each result file of `task` into `folder` as `<task id>-<n>.<ext>`."""
    try:
        # a command's one task: nothing else waits on this event loop
        folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    except OSError as exc:
        raise CommandFailed(f"--out {folder}: {exc.strerror or exc}") from exc
    task_id = str(task["id"])
    stem_base = _SAFE.sub("_", task_id)
    saved = []
    for n, entry in enumerate(task.get("results") or []):
        url = source(client, task_id, n, entry) if isinstance(entry, dict) else None
        if url is None:
            raise CommandFailed(f"result {n} of {task_id} has no URL to download")
        saved.append(await _save_one(client, url, entry, folder, f"{stem_base}-{n}"))
    return saved


class _HashingSink:
    """Writes to a file and hashes what it writes."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        """Write `chunk` and hash it."""
        self.file.write(chunk)
        self.hash.update(chunk)


async def _save_one(
    client: RelayClient, url: str, entry: dict[str, Any], folder: Path, stem: str
) -> Path:
    staged = folder / f".{stem}.part-{os.getpid()}"
    try:
        with staged.open("wb") as file:
            sink = _HashingSink(file)
            headers = await client.download(url, sink)
        expected = entry.get("sha256")
        if isinstance(expected, str) and client.is_ours(url):
            digest = sink.hash.hexdigest()
            if digest != expected:
                raise CommandFailed(
                    f"{url}: the file's SHA-256 is {digest}, not {expected} as the task says"
                )
        suffix = extension(headers.get("content-type") or entry.get("content_type"), url)
        return free_name(folder, stem, suffix, staged)
    except OSError as exc:
        raise CommandFailed(f"cannot save into {folder}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
