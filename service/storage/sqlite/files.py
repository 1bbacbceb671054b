"""The database file: its folder made, and a plain reason when SQLite cannot open it."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from service.domain.errors import StorageUnavailable


def make_folder(path: str) -> None:
    """Create the database's folder; a failure names the folder and the reason."""
    folder = Path(path).absolute().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise StorageUnavailable(
            f"cannot create the database folder {folder}: a file is in the way"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageUnavailable(f"cannot create the database folder {folder}: {reason}") from exc


def open_failure(path: str, exc: sqlite3.Error) -> StorageUnavailable:
    """Why the database could not be opened, naming the file and, when it is, the folder.

    SQLite only says "unable to open database file"; it also needs to create its -wal and -shm
    files beside the database, so a folder it cannot write in is the usual cause.
    """
    database = Path(path).absolute()
    try:
        fd, probe = tempfile.mkstemp(dir=database.parent, prefix=".grsai-relay-probe-")
    except OSError as probe_error:
        reason = probe_error.strerror or str(probe_error)
        return StorageUnavailable(
            f"cannot open the database {database}: cannot write in {database.parent}: {reason}"
        )
    os.close(fd)
    os.unlink(probe)
    return StorageUnavailable(f"cannot open the database {database}: {exc}")
