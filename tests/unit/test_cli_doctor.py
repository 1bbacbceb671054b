"""`grsai-relay doctor`'s checks, with GrsAI, the public URL and the relay faked by
httpx.MockTransport and a real SQLite file in a temporary folder."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.doctor import MB, DiskUsage, Doctor
from service.settings import Settings
from service.tunnel.probe import echo

GRSAI = "http://grsai.test"
PUBLIC = "http://public.test"
RELAY = "http://relay.test"
NONCE = "n" * 24
Handler = Callable[[httpx.Request], httpx.Response]


def healthy(request: httpx.Request) -> httpx.Response:
    """GrsAI with credits, a public URL that reaches a relay, a ready relay."""
    url = str(request.url)
    if url == f"{GRSAI}/client/openapi/getAPIKeyCredits":
        return httpx.Response(200, json={"code": 0, "msg": "success", "data": {"credits": 42}})
    if url == f"{PUBLIC}/webhooks/probe/{NONCE}":
        return httpx.Response(200, json=echo(NONCE))
    if url == f"{RELAY}/readyz":
        return httpx.Response(200, json={"status": "ready", "checks": {}})
    return httpx.Response(404, json={"code": -1, "msg": "not found"})


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "grsai_api_key": "sk-good",
        "grsai_base_url": GRSAI,
        "public_base_url": PUBLIC,
        "database_url": f"sqlite:///{tmp_path / 'relay.db'}",
        "asset_dir": str(tmp_path / "assets"),
    }
    return Settings(**{**values, **changes})


async def _run(
    settings: Settings,
    handler: Handler = healthy,
    free: int = 10_000 * MB,
) -> tuple[int, dict[str, str]]:
    """Run the doctor; its exit code and each check's line by check name."""
    out = io.StringIO()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        doctor = Doctor(
            settings,
            RELAY,
            http,
            lambda: NONCE,
            disk_usage=lambda _: DiskUsage(100_000 * MB, 0, free),
        )
        code = await doctor.run(out)
    lines = out.getvalue().splitlines()
    assert all(line[:5] in ("ok   ", "warn ", "FAIL ") for line in lines), lines
    return code, {line[5:].split(":")[0]: line for line in lines}


async def test_a_healthy_setup_passes_every_check(tmp_path: Path) -> None:
    """Every check is `ok` and the exit code is 0."""
    code, lines = await _run(_settings(tmp_path))
    assert code == 0
    assert all(line.startswith("ok ") for line in lines.values()), lines
    assert "accepted (42 credits)" in lines["grsai_key"]
    assert "reaches this relay" in lines["public_url"]
    assert set(lines) >= {"settings", "relay", "grsai_base_url", "database", "disk DATA_DIR"}


async def test_a_refused_grsai_key_fails(tmp_path: Path) -> None:
    """GrsAI's account call refusing the key is a FAIL line and exit 1."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("getAPIKeyCredits"):
            return httpx.Response(200, json={"code": -1, "msg": "invalid api key", "data": None})
        return healthy(request)

    code, lines = await _run(_settings(tmp_path), handler)
    assert code == 1
    assert lines["grsai_key"] == "FAIL grsai_key: refused: invalid api key"


@pytest.mark.parametrize(
    ("status", "body", "level"),
    [(200, {"code": -22, "msg": "task not found"}, "ok"), (401, {"code": -1}, "FAIL")],
)
async def test_without_an_account_call_a_poll_judges_the_key(
    tmp_path: Path, status: int, body: dict[str, Any], level: str
) -> None:
    """When GrsAI has no account call (404), a poll of an unknown id decides: -22 means the
    key was accepted, 401 that it was not."""
    polls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/draw/result":
            polls.append(request)
            return httpx.Response(status, json=body)
        if request.url.path.endswith("getAPIKeyCredits"):
            return httpx.Response(404)
        return healthy(request)

    code, lines = await _run(_settings(tmp_path), handler)
    assert lines["grsai_key"].startswith(level)
    assert code == (0 if level == "ok" else 1)
    assert polls[0].headers["authorization"] == "Bearer sk-good"


async def test_unreachable_grsai_fails_and_leaves_the_key_unchecked(tmp_path: Path) -> None:
    """GRSAI_BASE_URL that does not answer is a FAIL; the key is then not checked (warn)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "grsai.test":
            raise httpx.ConnectError("refused")
        return healthy(request)

    code, lines = await _run(_settings(tmp_path), handler)
    assert code == 1
    assert lines["grsai_base_url"].startswith("FAIL")
    assert lines["grsai_key"].startswith("warn")


async def test_a_public_url_that_does_not_echo_fails(tmp_path: Path) -> None:
    """A public URL answered by something that is not a grsai-relay is a FAIL."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "public.test":
            return httpx.Response(200, text="parked domain")
        return healthy(request)

    code, lines = await _run(_settings(tmp_path), handler)
    assert code == 1
    assert lines["public_url"].startswith("FAIL public_url:")


async def test_poll_mode_warns_instead_of_failing(tmp_path: Path) -> None:
    """No PUBLIC_BASE_URL is a warning that says poll mode, not a failure."""
    code, lines = await _run(_settings(tmp_path, public_base_url=None))
    assert code == 0
    assert lines["public_url"] == "warn public_url: poll mode: no public URL (PUBLIC_BASE_URL)"


async def test_a_dead_database_path_fails(tmp_path: Path) -> None:
    """A database under a regular file cannot be opened: FAIL database, exit 1."""
    (tmp_path / "afile").write_text("")
    settings = _settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'afile' / 'x.db'}")
    code, lines = await _run(settings)
    assert code == 1
    assert lines["database"].startswith("FAIL database: cannot open")


async def test_the_database_write_is_rolled_back(tmp_path: Path) -> None:
    """The scratch write leaves no table behind."""
    _, lines = await _run(_settings(tmp_path))
    assert lines["database"].startswith("ok   database: writable")
    with sqlite3.connect(tmp_path / "relay.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "doctor_scratch" not in tables


async def test_low_disk_space_warns(tmp_path: Path) -> None:
    """Less free space than --min-free-mb is a warning for each folder."""
    code, lines = await _run(_settings(tmp_path), free=10 * MB)
    assert code == 0
    assert lines["disk DATA_DIR"].startswith("warn")
    assert "below 1024 MB" in lines["disk ASSET_DIR"]


async def test_allow_lists_warn_on_everything_and_on_loopback_outside_demo(tmp_path: Path) -> None:
    """0.0.0.0/0 admits every address: warn; loopback outside demo mode: warn."""
    settings = _settings(
        tmp_path, fetch_allow_networks="0.0.0.0/0", delivery_allow_networks="10.0.0.0/8,::1/128"
    )
    code, lines = await _run(settings)
    assert code == 0
    assert lines["allow_list FETCH_ALLOW_NETWORKS"].startswith("warn")
    assert "admits loopback" in lines["allow_list DELIVERY_ALLOW_NETWORKS"]


async def test_demo_mode_says_so_and_warns_without_a_simulator(tmp_path: Path) -> None:
    """Demo mode is named; with no simulator reachable GrsAI's checks are warnings, and
    loopback in the allow-lists is expected."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            raise httpx.ConnectError("refused")
        return healthy(request)

    settings = _settings(
        tmp_path,
        grsai_api_key=None,
        grsai_base_url="https://grsaiapi.com",
        delivery_allow_networks="127.0.0.0/8",
    )
    code, lines = await _run(settings, handler)
    assert code == 0
    assert lines["mode"].startswith("warn mode: demo mode")
    assert "no simulator at http://127.0.0.1:8001" in lines["grsai_base_url"]
    assert lines["allow_list DELIVERY_ALLOW_NETWORKS"].startswith("ok")


async def test_a_relay_not_ready_fails_and_names_the_failing_checks(tmp_path: Path) -> None:
    """A running relay whose /readyz is 503 is a FAIL naming what is failing."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            checks = {"database": {"status": "failing"}, "poller": {"status": "ok"}}
            return httpx.Response(503, json={"status": "not_ready", "checks": checks})
        return healthy(request)

    code, lines = await _run(_settings(tmp_path), handler)
    assert code == 1
    assert lines["relay"] == f"FAIL relay: not ready at {RELAY}: database"
