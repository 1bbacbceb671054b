"""The public-URL probe: the echo route, and the check that sends a probe and reads its echo."""

from __future__ import annotations

import httpx
import pytest

from service.tunnel.probe import probe_public_url
from tests.unit.conftest import RELAY_URL, Relay

NONCE = "n0nce-0123456789abcdef"


async def test_probe_route_echoes_the_nonce_without_a_key(relay: Relay) -> None:
    """Anyone may probe: the answer is the nonce and the service name, never cached."""
    answer = await relay.client.get(f"/webhooks/probe/{NONCE}")
    assert answer.status_code == 200
    assert answer.json() == {"probe": NONCE, "service": "grsai-relay"}
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "nonce", ["short", "x" * 65, "bad%20nonce-0123456789", "a.b.c.d.e.f.g.h.i"]
)
async def test_probe_route_refuses_a_malformed_nonce_with_404(relay: Relay, nonce: str) -> None:
    """A nonce that is not 16-64 URL-safe characters is a JSON 404."""
    answer = await relay.client.get(f"/webhooks/probe/{nonce}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_probe_through_the_app_succeeds(relay: Relay) -> None:
    """The check reads the relay's own echo as a success."""
    result = await probe_public_url(relay.client, RELAY_URL, NONCE)
    assert result.ok, result.detail
    assert RELAY_URL in result.detail


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, json={"probe": "other-nonce-0123456789", "service": "grsai-relay"}),
         "not as a grsai-relay"),
        (httpx.Response(200, text="<html>parked domain</html>"), "not as a grsai-relay"),
        (httpx.Response(502, text="bad gateway"), "HTTP 502"),
        (httpx.Response(404, json={"error": "tunnel not found"}), "HTTP 404"),
    ],
)  # fmt: skip
async def test_probe_fails_on_anything_but_our_echo(answer: httpx.Response, expected: str) -> None:
    """A server that does not echo this nonce (another site, a gateway error) is a failure."""
    async with _client(httpx.MockTransport(lambda request: answer)) as http:
        result = await probe_public_url(http, "https://dead.example", NONCE)
    assert not result.ok
    assert expected in result.detail


async def test_probe_fails_when_nothing_answers() -> None:
    """A connection error is a failure naming the URL, not an exception."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with _client(httpx.MockTransport(refuse)) as http:
        result = await probe_public_url(http, "https://dead.example/", NONCE)
    assert not result.ok
    assert "https://dead.example/webhooks/probe/" in result.detail
    assert "connection refused" in result.detail


async def test_probe_refuses_a_bad_nonce_before_sending() -> None:
    """The caller's own nonce is checked: a malformed one is a programming error."""
    async with _client(httpx.MockTransport(lambda request: httpx.Response(200))) as http:
        with pytest.raises(ValueError, match="nonce"):
            await probe_public_url(http, "https://x.example", "short")
