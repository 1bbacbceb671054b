"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a
real relay subprocess and the simulator.

Chromium is `/usr/bin/chromium` (env `CHROMIUM` to point elsewhere); Playwright never downloads
a browser. A missing Chromium fails these tests, never skips them: `scripts/test` installs
Debian's package when it is missing. Screenshots of the list and of a task page are written to
the folder env `DASHBOARD_ARTIFACTS` names (default: the test's tmp_path), and printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, async_playwright

from service.api.dashboard.session import cookie_value
from service.domain.records import ApiKey
from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import RelayProcess, SimulatorServer
from tests.e2e.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.no_database]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
HANG = 60_000  # ms: a hang guard for the browser's waits, never a measure
QUIET = {"CALLBACK_SILENCE": "600"}  # no poll changes a held task behind the test's back
XSS = '<script>alert("xss")</script><img src=x onerror="alert(1)"><b id="injected">bold</b>'
THUMBS_LOADED = """(count) => {
  const imgs = [...document.querySelectorAll("td.thumb img")];
  return imgs.length === count && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(name="chromium")
def _chromium() -> Path:
    """Debian's Chromium; missing, the test fails (never skips)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does: apt-get install"
            " -y chromium), or point CHROMIUM at a Chromium binary"
        )
    return CHROMIUM


@pytest.fixture(name="browser")
async def _browser(chromium: Path) -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package (as root it needs --no-sandbox)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), args=args)
        yield browser
        await browser.close()


@pytest.fixture(name="artifacts")
def _artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: env DASHBOARD_ARTIFACTS, else the test's own folder."""
    folder = Path(os.environ.get("DASHBOARD_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page whose console errors, uncaught errors and dialogs (alerts) are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    async def _dialog_dismiss(self, dialog: Dialog) -> None:
        await dialog.dismiss()

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        asyncio.get_running_loop().create_task(self._dialog_dismiss(dialog))


SignIn = Callable[[str], Awaitable[Watched]]


@pytest.fixture(name="sign_in")
async def _sign_in(browser: Browser, relay: RelayProcess) -> AsyncIterator[SignIn]:
    """Open a browser context on the relay and sign in with an API key through the form."""
    contexts = []

    async def sign_in(key: str) -> Watched:
        context = await browser.new_context(
            base_url=relay.url, viewport={"width": 1100, "height": 720}
        )
        context.set_default_timeout(HANG)
        contexts.append(context)
        watched = Watched(await context.new_page())
        await watched.page.goto("/dashboard")  # signed out: sent on to the form
        assert watched.page.url.endswith("/dashboard/sign-in")
        await watched.page.fill("#api_key", key)
        await watched.page.click("#sign-in button")
        await watched.page.wait_for_url("**/dashboard")
        return watched

    yield sign_in
    for context in contexts:
        await context.close()


@pytest.fixture(name="relay")
def _relay(start_relay: RelayFactory) -> RelayProcess:
    """One relay in callback mode; a task sent in poll mode stays as the simulator holds it."""
    return start_relay(**QUIET)


async def submit(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, prompt: str, **extra: Any
) -> dict[str, Any]:
    """POST /v1/tasks with `prompt` (and any other field)."""
    body = {"model": "nano-banana", "prompt": prompt, **extra}
    created = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    assert created.status_code == 202, created.text
    task: dict[str, Any] = created.json()
    return task


async def test_signed_in_the_list_shows_tasks_thumbnails_and_escaped_prompts(
    relay: RelayProcess, client: httpx.AsyncClient, sign_in: SignIn, artifacts: Path
) -> None:
    """Signed in, the key's tasks appear with thumbnails that really loaded (a video's is its
    generated poster, and its page gets it from the relay, by ranges too); a prompt and
    metadata full of HTML and script show as text (no alert, no injected element); the task
    page shows the stored image, input, metadata, timeline and copies; the console stays
    clean. Screenshots of both pages are written."""
    key = relay.create_key("alice")
    plain = await submit(client, relay, key, "a lighthouse at dusk")
    hostile = await submit(client, relay, key, XSS, metadata={"note": XSS})
    video = await submit(client, relay, key, "a wave", model="veo3.1-fast")
    for task in (plain, hostile, video):
        await wait_for_task(client, relay, key, task["id"])
    watched = await sign_in(key)
    page = watched.page
    await page.wait_for_function(THUMBS_LOADED, arg=3)  # the video's is its poster
    assert await page.locator("tr[data-task]").count() == 3
    prompts = await page.locator("td.prompt").all_inner_texts()
    assert sorted(prompts) == sorted(["a lighthouse at dusk", XSS, "a wave"])
    assert await page.locator("#injected").count() == 0
    shot = artifacts / "dashboard-list.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    await page.click(f"tr[data-task='{plain['id']}'] td.prompt a")
    await page.wait_for_selector("#summary")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.media img')].every(i => i.naturalWidth > 0)"
    )
    assert await page.locator(".media img").count() == 1
    assert "applied" in await page.locator("#timeline").inner_text()
    assert "stored" in await page.locator("#copies").inner_text()
    assert '"prompt": "a lighthouse at dusk"' in await page.locator("#input").inner_text()
    shot = artifacts / "dashboard-task.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    await page.goto(f"/dashboard/tasks/{video['id']}")
    player = page.locator(".media video")
    assert await player.get_attribute("poster") == f"/dashboard/tasks/{video['id']}/thumbs/0"
    # the simulator's MP4 is a placeholder no player decodes: check that the page's own
    # script gets it, with the cookie, whole and by a byte range (as a player asks)
    got = await page.evaluate(
        """async (src) => {
          const whole = await fetch(src);
          const part = await fetch(src, {headers: {Range: "bytes=0-7"}});
          return [whole.status, whole.headers.get("content-type"), part.status,
                  (await part.arrayBuffer()).byteLength];
        }""",
        await player.get_attribute("src"),
    )
    assert got == [200, "video/mp4", 206, 8]

    await page.goto(f"/dashboard/tasks/{hostile['id']}")
    assert await page.locator("#prompt").inner_text() == XSS
    assert XSS.replace('"', '\\"') in await page.locator("#metadata").inner_text()
    assert await page.locator("#injected").count() == 0
    assert await page.locator("img[src='x']").count() == 0
    assert watched.dialogs == []
    assert watched.errors == []


async def test_a_running_task_turns_succeeded_without_a_reload(
    relay: RelayProcess,
    client: httpx.AsyncClient,
    simulator: SimulatorServer,
    sign_in: SignIn,
) -> None:
    """A task the simulator holds shows as running; when it finishes, its row turns succeeded
    and its thumbnail appears over the event stream, on the same page (no reload)."""
    key = relay.create_key("alice")
    held = await submit(client, relay, key, "[sim:delay=600] a lighthouse", mode="poll")
    await wait_for_task(client, relay, key, held["id"], lambda t: t["status"] == "running")
    watched = await sign_in(key)
    page = watched.page
    row = page.locator(f"tr[data-task='{held['id']}']")
    assert await row.locator(".status").inner_text() == "running"
    await page.evaluate("() => { window.sameDocument = true; }")
    await page.wait_for_function("() => document.readyState === 'complete'")
    finished = await client.post(f"{simulator.url}/_sim/tasks/{held['upstream_id']}/complete")
    assert finished.status_code == 200, finished.text
    await page.wait_for_function(
        """(id) => {
          const row = document.querySelector(`tr[data-task="${id}"]`);
          const img = row.querySelector("td.thumb img");
          return row.querySelector(".status").textContent === "succeeded"
            && img !== null && img.complete && img.naturalWidth > 0;
        }""",
        arg=held["id"],
    )
    assert await page.evaluate("() => window.sameDocument === true")
    assert watched.errors == []


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    """A client endpoint on 127.0.0.1 that answers 200."""
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


async def attempts(page: Page) -> int:
    """The delivery attempts the task page lists."""
    return await page.locator("tr.attempt").count()


async def reload_until_attempts(page: Page, count: int) -> None:
    """Reload the task page until it lists `count` attempts (a 60 s hang guard)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG / 1000
    while await attempts(page) < count:
        assert loop.time() < deadline, f"the page never listed {count} attempts"
        await page.reload()


async def test_redeliver_adds_an_attempt_and_a_form_without_its_token_is_refused(
    relay: RelayProcess,
    client: httpx.AsyncClient,
    receiver: Receiver,
    sign_in: SignIn,
) -> None:
    """Pressing redeliver queues the final event again: the page then lists a second attempt
    and the endpoint got the same event twice. The same form without its CSRF token is 403
    `csrf_failed`, and with the token but from another origin 403 `cross_origin`."""
    key = relay.create_key("alice")
    task = await submit(client, relay, key, "a fox", callback_url=receiver.url("ok"))
    await wait_for_task(client, relay, key, task["id"])
    watched = await sign_in(key)
    page = watched.page
    await page.goto(f"/dashboard/tasks/{task['id']}")
    await reload_until_attempts(page, 1)  # the first delivery may still be on its way
    assert await attempts(page) == 1
    await page.click("#redeliver button")
    await page.wait_for_selector("#redelivered")
    await reload_until_attempts(page, 2)
    assert await attempts(page) == 2
    assert "delivered" in await page.locator(".delivery-status").inner_text()
    ids = {r.headers["webhook-id"] for r in receiver.bodies("ok")}
    assert len(receiver.bodies("ok")) == 2
    assert len(ids) == 1
    assert watched.errors == []

    token = await page.locator("#redeliver input[name='csrf']").get_attribute("value")
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in await page.context.cookies())
    await page.evaluate("() => document.querySelector(\"#redeliver input[name='csrf']\").remove()")
    async with page.expect_response(f"**/tasks/{task['id']}/redeliver") as refused:
        await page.click("#redeliver button")
    assert (await refused.value).status == 403
    assert "csrf_failed" in await page.locator("main").inner_text()
    cross = await client.post(
        f"{relay.url}/dashboard/tasks/{task['id']}/redeliver",
        data={"csrf": token or ""},
        headers={"Origin": "http://evil.example", "Cookie": cookie},
    )
    assert cross.status_code == 403
    assert "cross_origin" in cross.text
    assert len(receiver.bodies("ok")) == 2


async def session_cookie(client: httpx.AsyncClient, relay: RelayProcess, key: str) -> str:
    """Sign in with httpx (a same-origin form); return the Cookie header value."""
    signed = await client.post(
        f"{relay.url}/dashboard/sign-in", data={"api_key": key}, headers={"Origin": relay.url}
    )
    assert signed.status_code == 303, signed.text
    return signed.headers["set-cookie"].split(";")[0]


async def test_another_keys_task_is_404_and_hostile_input_gets_a_precise_4xx(
    relay: RelayProcess, client: httpx.AsyncClient, sign_in: SignIn
) -> None:
    """A signed-in key gets 404 for another key's task, its files, thumbnails and events; bad
    cookies are 401 `signed_out` (malformed, forged, expired, of a revoked key), bad filters
    422 or 400, bad ids 404 or 422, forms without Origin or token 403, another form type 415."""
    key, secret = relay.cli("keys", "create", "--name", "alice").splitlines()[:2]
    other = relay.create_key("bob")
    theirs = await submit(client, relay, other, "bob's secret lighthouse")
    await wait_for_task(client, relay, other, theirs["id"])
    watched = await sign_in(key)
    answer = await watched.page.goto(f"/dashboard/tasks/{theirs['id']}")
    assert answer is not None
    assert answer.status == 404
    assert "bob's" not in await watched.page.content()

    cookie = await session_cookie(client, relay, key)

    async def status(path: str, **headers: str) -> tuple[int, str]:
        got = await client.get(f"{relay.url}{path}", headers={"Cookie": cookie, **headers})
        assert got.headers["content-type"].startswith("text/html"), path
        return got.status_code, got.text

    owned = theirs["id"]
    for path in (
        f"/dashboard/tasks/{owned}/files/0",
        f"/dashboard/tasks/{owned}/thumbs/0",
        f"/dashboard/events?ids={owned}",
        f"/dashboard/tasks/{'x' * 65}",
        f"/dashboard/tasks/{owned}/files/abc",
    ):
        assert (await status(path))[0] == 404, path
    for path, code in (
        ("/dashboard?status=bogus", 422),
        (f"/dashboard?model={'m' * 101}", 422),
        ("/dashboard?cursor=not-a-cursor", 400),
        ("/dashboard/events?ids=", 422),
        ("/dashboard/events?ids=a%20b", 422),
        ("/dashboard/events?ids=" + ",".join(["t"] * 51), 422),
    ):
        assert (await status(path))[0] == code, path

    key_id = cookie.split(".")[1]
    alice = ApiKey(key_id, "alice", key[:12], 0.0)
    bad = {
        "malformed": "grsai_dashboard=garbage",
        "forged": cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB"),
        "expired": f"grsai_dashboard={cookie_value(secret, alice, 1_000_000)}",
    }
    for why, value in bad.items():
        got = await client.get(f"{relay.url}/dashboard", headers={"Cookie": value})
        assert got.status_code == 401, why
        assert "signed_out" in got.text, why

    form = {"Cookie": cookie, "Origin": relay.url}
    signed_in = await client.post(f"{relay.url}/dashboard/sign-in", data={"api_key": key})
    assert signed_in.status_code == 403  # no Origin
    wrong = await client.post(
        f"{relay.url}/dashboard/sign-in", data={"api_key": "grk_nope"}, headers=form
    )
    assert wrong.status_code == 401
    as_json = await client.post(f"{relay.url}/dashboard/sign-out", json={}, headers=form)
    assert as_json.status_code == 415
    no_token = await client.post(
        f"{relay.url}/dashboard/sign-out", data={"other": "1"}, headers=form
    )
    assert no_token.status_code == 403
    assert "csrf_failed" in no_token.text

    relay.cli("keys", "revoke", key_id)
    revoked = await client.get(f"{relay.url}/dashboard", headers={"Cookie": cookie})
    assert revoked.status_code == 401
    assert "signed_out" in revoked.text


async def test_the_list_pages_with_the_cursor_and_filters(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """21 tasks fill a page of 20 and an older page of 1 (the cursor keeps the filter); a
    status filter with nothing to show says so."""
    key = relay.create_key("alice")
    tasks = [await submit(client, relay, key, f"task {n}") for n in range(21)]
    for task in tasks:
        await wait_for_task(client, relay, key, task["id"])
    cookie = await session_cookie(client, relay, key)
    first = await client.get(f"{relay.url}/dashboard?status=succeeded", headers={"Cookie": cookie})
    assert first.status_code == 200
    assert first.text.count("<tr data-task=") == 20
    assert tasks[0]["id"] not in first.text
    older = first.text.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = await client.get(relay.url + older.replace("&amp;", "&"), headers={"Cookie": cookie})
    assert second.status_code == 200
    assert second.text.count("<tr data-task=") == 1
    assert tasks[0]["id"] in second.text
    none = await client.get(f"{relay.url}/dashboard?status=failed", headers={"Cookie": cookie})
    assert 'id="no-tasks"' in none.text
