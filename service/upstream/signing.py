"""Standard Webhooks signatures (https://www.standardwebhooks.com), as OpenAI and Svix use them.

    webhook-id:        msg_<random>          (stable across retries of one event)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")> [v1,<...> ...]

Secrets are shown to users as `whsec_<base64 of 24 random bytes>`; the HMAC key is the decoded
bytes. During a rotation both the old and the new secret sign, space separated, so a receiver
holding either one verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105  # the public prefix of every secret, not a secret
SECRET_BYTES = 24


def new_secret(nbytes: int = SECRET_BYTES) -> str:
    """A fresh signing secret in the `whsec_<base64>` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a whsec_ secret") from exc
    if not key:
        raise ValueError("empty signing secret")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per active secret, space separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)


def signed_headers(
    secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> Mapping[str, str]:
    """All headers of a signed delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
        "content-type": "application/json",
    }
