"""The dashboard's session: a signed cookie any replica can check, CSRF tokens tied to it, the
Origin check on every form, and the security headers of every dashboard answer.

The cookie is `v1.<key id>.<expires>.<demo>.<mac>`: an HMAC-SHA256 with the API key's webhook
signing secret (the one `keys rotate-secret` renews), so no new secret exists to manage and
every replica checks it against the database. It names the key, so each page reads the key
back: revoking the key ends its sessions at once. The CSRF token is another HMAC of the same
session with the same secret: stateless, valid exactly as long as its session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from service.api.context import Services, services
from service.domain.errors import Forbidden, Unauthorized
from service.domain.records import ApiKey

COOKIE = "grsai_dashboard"
COOKIE_PATH = "/dashboard"
CSRF_FIELD = "csrf"
_COOKIE = re.compile(r"v1\.([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([01])\.([A-Za-z0-9_-]{43})")
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def signed_out(message: str) -> Unauthorized:
    """No session, or one that is not valid (any more): 401 `signed_out`, sign in again."""
    return Unauthorized(message, code="signed_out")


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in API key, and the CSRF token its forms carry."""

    key: ApiKey
    expires: int
    csrf: str


def _mac(secret: str, purpose: str, key_id: str, expires: int, demo: bool) -> str:
    message = f"grsai-relay-dashboard-{purpose}\n{key_id}\n{expires}\n{int(demo)}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def cookie_value(secret: str, key: ApiKey, expires: int) -> str:
    """The session cookie's value for `key` until `expires` (epoch seconds)."""
    mac = _mac(secret, "session", key.id, expires, key.demo)
    return f"v1.{key.id}.{expires}.{int(key.demo)}.{mac}"


def secure_cookies(svc: Services) -> bool:
    """Mark the cookie Secure when the relay's public URL is https."""
    return svc.public.base.startswith("https://")


async def start_session(svc: Services, key: ApiKey, response: Response) -> None:
    """Set the session cookie of `key` on `response` (signed with its newest secret)."""
    now = svc.clock.now()
    secrets = await svc.storage.signing_secrets(key.id, now)
    if not secrets:
        raise Unauthorized("this API key has no signing secret; run `grsai-relay keys create`")
    seconds = svc.settings.dashboard_session_seconds
    response.set_cookie(
        COOKIE,
        cookie_value(secrets[0], key, int(now + seconds)),
        max_age=seconds,
        path=COOKIE_PATH,
        secure=secure_cookies(svc),
        httponly=True,
        samesite="strict",
    )


def end_session(svc: Services, response: Response) -> None:
    """Clear the session cookie."""
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, secure=secure_cookies(svc), httponly=True, samesite="strict"
    )


async def session_from(request: Request) -> Session:
    """The request's valid session, or 401 `signed_out`: missing, malformed, expired, forged,
    signed with a retired secret, of a revoked key, or a demo key outside demo mode."""
    raw = request.cookies.get(COOKIE)
    if raw is None:
        raise signed_out("not signed in")
    match = _COOKIE.fullmatch(raw)
    if match is None:
        raise signed_out("the session cookie is not one this relay made; sign in again")
    key_id, expires, demo, mac = match[1], int(match[2]), match[3] == "1", match[4]
    svc = services(request)
    now = svc.clock.now()
    if expires <= now:
        raise signed_out("the session expired; sign in again")
    key = await svc.storage.api_key_by_id(key_id)
    if key is None or key.demo != demo or (key.demo and not svc.demo_mode):
        raise signed_out("the session's API key is revoked or unknown; sign in again")
    for secret in await svc.storage.signing_secrets(key_id, now):
        if hmac.compare_digest(_mac(secret, "session", key_id, expires, demo), mac):
            return Session(key, expires, _mac(secret, "csrf", key_id, expires, demo))
    raise signed_out("the session's signature does not verify; sign in again")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: Request) -> None:
    """A form must come from a page of this relay: `Origin` is the public URL's origin or this
    request's own host (browsers send it on every POST), and `Sec-Fetch-Site`, when sent, is
    same-origin. Anything else is 403 `cross_origin`."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"a {site} form is refused", code="cross_origin")
    origin = (request.headers.get("origin") or "").strip().lower()
    if not origin or origin == "null":
        raise Forbidden("the form came without an Origin header", code="cross_origin")
    allowed = set()
    if base := services(request).public.base:
        allowed.add(_origin(base))
    if host := request.headers.get("host"):
        allowed |= {f"http://{host.lower()}", f"https://{host.lower()}"}
    if origin not in allowed:
        raise Forbidden("the form came from another site", code="cross_origin")


def check_csrf(session: Session, form: dict[str, str]) -> None:
    """The form carries this session's CSRF token, else 403 `csrf_failed`."""
    token = form.get(CSRF_FIELD, "")
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise Forbidden(
            "the form's CSRF token is missing or wrong; reload the page", code="csrf_failed"
        )
