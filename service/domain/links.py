"""Result-file links a plain GET can fetch: GrsAI's clients download result URLs without any
credentials, so the drop-in API hands out our stored copies as signed, expiring links.

A link is signed with the owning API key's webhook signing secret (`keys rotate-secret` keeps
the old one valid for its grace period, and so its links; revoking the key ends them all):
every replica can check it from the database, and no new secret exists to manage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlencode

FILES_PATH = "/v1/files"


def link_signature(secret: str, task_id: str, n: int, expires: int) -> str:
    """The signature of one file link (URL-safe base64 of an HMAC-SHA256)."""
    message = f"grsai-relay-file\n{task_id}\n{n}\n{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def file_link(base_url: str, secret: str, task_id: str, n: int, expires: int) -> str:
    """`{base}/v1/files/{task}/{n}?expires=...&sig=...`: result `n` until `expires` (epoch s)."""
    query = urlencode({"expires": expires, "sig": link_signature(secret, task_id, n, expires)})
    return f"{base_url}{FILES_PATH}/{task_id}/{n}?{query}"


def link_valid(
    secrets: Iterable[str], task_id: str, n: int, expires: int, signature: str, now: float
) -> bool:
    """The link is unexpired and signed with one of the key's current secrets."""
    if expires < now:
        return False
    given = signature.encode("utf-8", "surrogatepass")  # bytes: any text a query may carry
    return any(
        hmac.compare_digest(link_signature(secret, task_id, n, expires).encode(), given)
        for secret in secrets
    )
