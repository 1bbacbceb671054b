"""`grsai-relay doctor`: one line per check of the settings and each dependency.

    ok   <check>: detail      works
    warn <check>: detail      works, but look at it
    FAIL <check>: detail      broken: the command exits 1

The checks "ping" each dependency the way the relay uses it: GrsAI's account call with the key,
the public URL through the relay's own probe route, a scratch write to the database that is
rolled back, the free space under the folders the relay writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import secrets
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, TextIO

import httpx

from service.cli.demo import DEMO_UPSTREAM_KEY, own_url
from service.cli.ops import with_storage
from service.cli.preflight import loopback_fetch_warning, workers_problem
from service.domain.errors import RelayError
from service.settings import Settings
from service.storage import sqlite_path
from service.tunnel.probe import probe_public_url
from service.upstream.netguard import parse_networks

Level = Literal["ok", "warn", "FAIL"]
DEFAULT_GRSAI = "https://grsaiapi.com"
STANDALONE_SIMULATOR = "http://127.0.0.1:8001"  # `grsai-relay simulator`'s default address
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome."""

    level: Level
    name: str
    detail: str

    def line(self) -> str:
        """`ok   name: detail`."""
        return f"{self.level:<4} {self.name}: {self.detail}"


class DiskUsage(NamedTuple):
    """What `shutil.disk_usage` answers."""

    total: int
    used: int
    free: int


@dataclass
class Doctor:
    """Runs every check against `settings`; the seams are for tests."""

    settings: Settings
    relay_url: str
    http: httpx.AsyncClient
    token: Callable[[], str]
    min_free: int = 1024 * MB
    disk_usage: Callable[[str], DiskUsage] = lambda path: DiskUsage(*shutil.disk_usage(path))

    async def run(self, out: TextIO) -> int:
        """Print each check as it finishes; 1 when one failed, else 0."""
        failed = False
        steps: list[Callable[[], list[Check] | Awaitable[list[Check]]]] = [
            self.settings_checks,
            self.relay,
            self.grsai,
            self.public_url,
            self.database,
            self.disk,
            self.allow_lists,
        ]
        for step in steps:
            found = step()
            for check in await found if inspect.isawaitable(found) else found:
                print(check.line(), file=out, flush=True)
                failed = failed or check.level == "FAIL"
        return 1 if failed else 0

    def settings_checks(self) -> list[Check]:
        """The settings parse (else `main` never gets here), and hang together."""
        s = self.settings
        mode = f"callback mode via {s.public_base_url}" if s.public_base_url else "poll mode"
        checks = [Check("ok", "settings", f"valid ({mode}, database {_scheme(s.database_url)})")]
        problem = workers_problem(s, s.workers, f"WORKERS={s.workers}")
        if problem is not None:
            checks.append(Check("FAIL", "settings", problem))
        if s.demo_mode:
            checks.append(
                Check("warn", "mode", "demo mode: GRSAI_API_KEY is not set, GrsAI is a simulator")
            )
        elif (warning := loopback_fetch_warning(s)) is not None:
            checks.append(Check("warn", "settings", warning))
        return checks

    async def relay(self) -> list[Check]:
        """Is a relay serving at the URL the other commands use, and ready?"""
        try:
            response = await self.http.get(f"{self.relay_url}/readyz")
            body = response.json()
        except httpx.HTTPError as exc:
            return [Check("warn", "relay", f"none answering at {self.relay_url} ({_why(exc)})")]
        except ValueError:
            return [Check("warn", "relay", f"{self.relay_url} is not a grsai-relay")]
        checks = body.get("checks") if isinstance(body, dict) else None
        if response.status_code == 200:
            return [Check("ok", "relay", f"ready at {self.relay_url}")]
        failing = sorted(k for k, v in (checks or {}).items() if v.get("status") != "ok")
        return [Check("FAIL", "relay", f"not ready at {self.relay_url}: {', '.join(failing)}")]

    def _grsai(self) -> tuple[str, str]:
        """GrsAI's base URL and key; in demo mode a simulator's (GRSAI_BASE_URL if set, else
        the standalone simulator's default address)."""
        s = self.settings
        if not s.demo_mode:
            return s.grsai_base_url, s.grsai_api_key or ""
        base = s.grsai_base_url if s.grsai_base_url != DEFAULT_GRSAI else STANDALONE_SIMULATOR
        return base, DEMO_UPSTREAM_KEY

    async def grsai(self) -> list[Check]:
        """GRSAI_BASE_URL answers, and accepts the key (its account call, else a poll)."""
        base, key = self._grsai()
        demo = self.settings.demo_mode
        try:
            response = await self.http.get(base)
        except httpx.HTTPError as exc:
            if demo:
                detail = f"no simulator at {base} ({_why(exc)}); `grsai-relay serve` starts its own"
                return [Check("warn", "grsai_base_url", detail), _unchecked("grsai_key")]
            detail = f"{base} did not answer: {_why(exc)}"
            return [Check("FAIL", "grsai_base_url", detail), _unchecked("grsai_key")]
        reached = Check("ok", "grsai_base_url", f"{base} answers (HTTP {response.status_code})")
        return [reached, await self._key_check(base, key)]

    async def _key_check(self, base: str, key: str) -> Check:
        try:
            response = await self.http.post(
                f"{base}/client/openapi/getAPIKeyCredits", json={"apiKey": key}
            )
            if response.status_code == 404:  # no account endpoint: a poll tells it too
                return await self._key_by_poll(base, key)
            if response.status_code in (401, 403):
                return Check("FAIL", "grsai_key", f"refused (HTTP {response.status_code})")
            body = response.json()
        except httpx.HTTPError as exc:
            return Check("FAIL", "grsai_key", f"not checked: {_why(exc)}")
        except ValueError:
            return Check("FAIL", "grsai_key", f"HTTP {response.status_code}, not JSON")
        if not isinstance(body, dict) or body.get("code") != 0:
            message = body.get("msg") if isinstance(body, dict) else None
            return Check("FAIL", "grsai_key", f"refused: {message or response.text[:200]}")
        data = body.get("data")
        credits = data.get("credits") if isinstance(data, dict) else None
        if credits == 0:
            return Check("warn", "grsai_key", "accepted, but no credits left")
        return Check("ok", "grsai_key", f"accepted ({credits} credits)")

    async def _key_by_poll(self, base: str, key: str) -> Check:
        """A poll of an id no one has: -22 (not found) means the key was accepted."""
        response = await self.http.post(
            f"{base}/v1/draw/result",
            json={"id": f"doctor-{self.token()}"},
            headers={"Authorization": f"Bearer {key}"},
        )
        if response.status_code in (401, 403):
            return Check("FAIL", "grsai_key", f"refused (HTTP {response.status_code})")
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            code = None
        if code == -22:
            return Check("ok", "grsai_key", "accepted (a poll of an unknown id answered -22)")
        return Check("warn", "grsai_key", f"unclear: a poll answered HTTP {response.status_code}")

    async def public_url(self) -> list[Check]:
        """A probe sent through PUBLIC_BASE_URL must come back from a grsai-relay."""
        s = self.settings
        public = s.public_base_url
        if public is None and not s.demo_mode:
            return [Check("warn", "public_url", "poll mode: no public URL (PUBLIC_BASE_URL)")]
        target = public or own_url(s.host, s.port)  # demo: callbacks come back over loopback
        result = await probe_public_url(self.http, target, self.token())
        if result.ok:
            return [Check("ok", "public_url", result.detail)]
        level: Level = "warn" if public is None else "FAIL"
        return [Check(level, "public_url", result.detail)]

    async def database(self) -> list[Check]:
        """The database opens (migrated), answers, and takes a write (rolled back)."""
        s = self.settings
        try:
            storage = await with_storage(s)
        except RelayError as exc:
            return [Check("FAIL", "database", f"cannot open: {exc.message}")]
        except (OSError, ValueError) as exc:
            return [Check("FAIL", "database", f"cannot open: {exc}")]
        try:
            await storage.ping()
            version = await storage.schema_version()
        except RelayError as exc:
            return [Check("FAIL", "database", exc.message)]
        finally:
            await storage.close()
        if s.database_url.startswith("sqlite:"):
            path = sqlite_path(s.database_url)
            try:
                await asyncio.to_thread(_sqlite_scratch_write, path, s.sqlite_busy_timeout_ms)
            except sqlite3.Error as exc:
                return [Check("FAIL", "database", f"{path} refuses a write: {exc}")]
        return [Check("ok", "database", f"writable (schema version {version})")]

    def disk(self) -> list[Check]:
        """Free space under the database's folder and ASSET_DIR."""
        s = self.settings
        folders: list[tuple[str, Path]] = []
        if s.database_url.startswith("sqlite:"):
            folders.append(("disk DATA_DIR", Path(sqlite_path(s.database_url)).absolute().parent))
        if not s.asset_store:
            folders.append(("disk ASSET_DIR", Path(s.asset_dir).absolute()))
        return [self._space(name, folder) for name, folder in folders]

    def _space(self, name: str, folder: Path) -> Check:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        try:
            usage = self.disk_usage(str(existing))
        except OSError as exc:
            return Check("FAIL", name, f"{folder}: {exc.strerror or exc}")
        free = f"{usage.free // MB} MB free of {usage.total // MB} MB at {folder}"
        if usage.free < self.min_free:
            return Check("warn", name, f"{free} (below {self.min_free // MB} MB)")
        return Check("ok", name, free)

    def allow_lists(self) -> list[Check]:
        """FETCH_ALLOW_NETWORKS and DELIVERY_ALLOW_NETWORKS: no everything, no loopback in
        production."""
        s = self.settings
        lists = (
            ("FETCH_ALLOW_NETWORKS", s.fetch_allow_networks),
            ("DELIVERY_ALLOW_NETWORKS", s.delivery_allow_networks),
        )
        return [_allow_list(name, spec, s.demo_mode) for name, spec in lists]


def _allow_list(name: str, spec: str, demo: bool) -> Check:
    check = f"allow_list {name}"
    try:
        networks = parse_networks(spec)
    except ValueError as exc:
        return Check("FAIL", check, str(exc))
    if not networks:
        return Check("ok", check, "empty: public addresses only")
    listed = ", ".join(str(n) for n in networks)
    if any(n.prefixlen == 0 for n in networks):
        return Check("warn", check, f"{listed} admits every address, private ones included")
    loopback = [
        n for n in networks for lo in LOOPBACK if n.version == lo.version and n.overlaps(lo)
    ]
    if loopback and not demo:
        return Check("warn", check, f"{listed} admits loopback outside demo mode")
    return Check("ok", check, listed)


def _sqlite_scratch_write(path: str, busy_timeout_ms: int) -> None:
    """Create and fill a scratch table in a write transaction, then roll it back."""
    uri = f"file:{path}?mode=rw"  # never creates a database that is not there
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
    with contextlib.closing(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE doctor_scratch (n INTEGER)")
            db.execute("INSERT INTO doctor_scratch VALUES (1)")
        finally:
            db.execute("ROLLBACK")


def _unchecked(name: str) -> Check:
    return Check("warn", name, "not checked: GrsAI did not answer")


def _scheme(url: str) -> str:
    return url.split(":", 1)[0]


def _why(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


def doctor_http(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The doctor's HTTP client: GrsAI's verify timeout for each call."""
    timeout = httpx.Timeout(settings.upstream_verify_timeout, connect=5.0)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


def fresh_token() -> str:
    """A fresh random token (the probe's nonce, an id no one has)."""
    return secrets.token_urlsafe(24)


async def doctor(settings: Settings, relay_url: str, min_free_mb: int, out: TextIO) -> int:
    """Run every check, printing a line each; 1 when one failed."""
    async with doctor_http(settings) as http:
        checks = Doctor(settings, relay_url, http, fresh_token, min_free=min_free_mb * MB)
        return await checks.run(out)
