"""The public-URL self-check: a request sent out through our own public address must come back
to a grsai-relay, which answers with the nonce it was sent.

The answer is stateless (any replica behind a load balancer echoes it), so the check proves the
address reaches *a* relay, not merely some server: a parked domain or another service does not
echo a fresh random nonce.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

PROBE_PATH = "/webhooks/probe/"
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
SERVICE = "grsai-relay"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Whether the probe came back through the public URL, in how long, and what went wrong."""

    ok: bool
    detail: str
    seconds: float


def echo(nonce: str) -> dict[str, str]:
    """The probe route's answer."""
    return {"probe": nonce, "service": SERVICE}


async def probe_public_url(
    http: httpx.AsyncClient, public_url: str, nonce: str, *, within: float = 10.0
) -> ProbeResult:
    """GET `{public_url}/webhooks/probe/{nonce}` and check a relay echoed the nonce."""
    if not NONCE.fullmatch(nonce):
        raise ValueError("a probe nonce is 16-64 URL-safe characters")
    url = public_url.rstrip("/") + PROBE_PATH + nonce
    started = time.perf_counter()
    try:
        response = await http.get(url, timeout=within, follow_redirects=False)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return ProbeResult(False, f"{url} did not answer: {reason}", time.perf_counter() - started)
    took = time.perf_counter() - started
    if response.status_code != 200:
        return ProbeResult(False, f"{url} answered HTTP {response.status_code}", took)
    try:
        body = response.json()
    except ValueError:
        body = None
    if body != echo(nonce):
        return ProbeResult(False, f"{url} answered, but not as a grsai-relay (no echo)", took)
    return ProbeResult(True, f"{public_url} reaches this relay ({took * 1000:.0f} ms)", took)
