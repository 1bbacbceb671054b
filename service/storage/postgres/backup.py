"""`db backup` on PostgreSQL: `pg_dump` in its custom format, verified, then moved into place.

`pg_dump` reads the live database in one repeatable-read snapshot (the relay keeps serving;
nothing is locked beyond what a reader takes), into a private temporary file beside the
destination. The copy is then verified with `pg_restore`: its table of contents must list
(`--list`), every data block must read back (a full restore into /dev/null), and the schema
version is read from the copy's own `schema_version` rows, so it is the version of what was
copied. Only then is it renamed over the destination, so the destination is always either the
previous file or a complete, verified copy. Restore it with
`pg_restore --dbname=postgresql://.../empty_db --no-owner FILE`.

Without `pg_dump` on PATH nothing is copied: the error says what to install, or to use the
database provider's own snapshots.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from service.storage.base import Backup, BackupError

MISSING_TOOLS = (
    "{tool} is not on PATH: install the PostgreSQL client tools (pg_dump and pg_restore, of the"
    " server's major version or newer) and run `db backup` again, or back up with your database"
    " provider's managed snapshots"
)


def backup_database(url: str, dest: str | Path) -> Backup:
    """Dump the PostgreSQL database at `url` to `dest` with `pg_dump --format=custom`, verified.

    Blocking. Raises `BackupError` when the tools are missing, the dump fails or the copy does
    not verify; `dest` is then left as it was.
    """
    final = Path(dest)
    if final.is_dir():
        raise BackupError(f"{final} is a directory; give the backup's file name")
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        raise BackupError(MISSING_TOOLS.format(tool="pg_dump" if pg_dump is None else "pg_restore"))
    target, password = without_password(url)
    env = dict(os.environ)
    if password is not None:  # never on a command line, where `ps` shows it
        env["PGPASSWORD"] = password
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)  # mode 0600, kept by pg_dump: the copy holds key hashes and signing secrets
    tmp = Path(name)
    try:
        _run([pg_dump, "--format=custom", "--no-password", f"--file={tmp}", target], env, password)
        _verify(pg_restore, tmp, env, password)
        version = _schema_version(pg_restore, tmp, env, password)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return Backup(final, final.stat().st_size, version, redacted(url))


def without_password(url: str) -> tuple[str, str | None]:
    """`url` without the password in its user part, and that password (None if none)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    netloc = f"{user}@{hosts}" if user else hosts
    return urlunsplit(parts._replace(netloc=netloc)), unquote(password)


def redacted(url: str) -> str:
    """`url` as an operator may see it: any password shown as `***`."""
    target, password = without_password(url)
    if password is None:
        return url
    parts = urlsplit(target)
    user, at, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}" if at else f":***@{hosts}"))


def _run(argv: list[str], env: dict[str, str], password: str | None) -> str:
    """Run a PostgreSQL client tool; its stdout, or `BackupError` with what it said."""
    tool = Path(argv[0]).name
    try:
        done = subprocess.run(  # noqa: S603  # pg_dump / pg_restore found on PATH, fixed options
            argv, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise BackupError(f"could not run {tool}: {exc}") from exc
    if done.returncode != 0:
        said = "; ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        if password:
            said = said.replace(password, "***")
        raise BackupError(f"{tool} failed (exit {done.returncode}): {said or 'no message'}")
    return done.stdout


def _verify(pg_restore: str, archive: Path, env: dict[str, str], password: str | None) -> None:
    """The archive's table of contents lists, and every block of it reads back."""
    listing = _run([pg_restore, "--list", str(archive)], env, password)
    if "Format: CUSTOM" not in listing:
        raise BackupError("the copy failed verification: pg_restore --list shows no archive")
    _run([pg_restore, f"--file={os.devnull}", str(archive)], env, password)


def _schema_version(
    pg_restore: str, archive: Path, env: dict[str, str], password: str | None
) -> int:
    """The version in the copy's `schema_version` table (0 when it has none: never migrated)."""
    argv = [pg_restore, "--data-only", "--table=schema_version", "--file=-", str(archive)]
    versions, copying = [], False
    for line in _run(argv, env, password).splitlines():
        if line.startswith("COPY ") and line.endswith("FROM stdin;"):
            copying = True
        elif line == "\\.":
            copying = False
        elif copying:
            versions.append(int(line.split("\t", 1)[0]))
    return max(versions, default=0)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
