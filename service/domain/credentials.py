"""Secrets we hand out (API keys, callback tokens): made once, shown once, stored hashed."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

TOKEN_BYTES = 32  # 256 bits; the callback URL token
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
API_KEY_PREFIX = "grk_"
_API_KEY_RE = re.compile(r"grk_[A-Za-z0-9_-]{43}")


class Entropy(Protocol):
    """Where randomness comes from (injected so tests can make it predictable)."""

    def token(self, nbytes: int) -> str:
        """Return `nbytes` random bytes as URL-safe base64 without padding."""
        ...


class SystemEntropy:
    """Cryptographic randomness from `secrets`."""

    def token(self, nbytes: int) -> str:
        """Return `secrets.token_urlsafe(nbytes)`."""
        return secrets.token_urlsafe(nbytes)


def hash_secret(value: str) -> bytes:
    """SHA-256 of a high-entropy secret; what we store instead of the secret itself.

    A plain fast hash is right here: the secrets are 256 random bits, so there is nothing to
    brute-force, and the lookup stays one indexed equality on the digest (no timing oracle on
    the secret's characters, since an attacker cannot choose the digest's prefix).
    """
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def new_callback_token(entropy: Entropy) -> str:
    """A fresh per-task callback token."""
    return entropy.token(TOKEN_BYTES)


def token_well_formed(token: str) -> bool:
    """True when `token` has the exact shape of our callback tokens."""
    return _TOKEN_RE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly made API key: the secret (shown once) and what is stored about it."""

    id: str
    secret: str
    prefix: str


def new_api_key(entropy: Entropy) -> NewApiKey:
    """Make an API key `grk_<43 chars>` with a public id and a display prefix."""
    secret = API_KEY_PREFIX + entropy.token(TOKEN_BYTES)
    return NewApiKey(id="key_" + entropy.token(9), secret=secret, prefix=secret[:12])


def api_key_well_formed(secret: str) -> bool:
    """True when `secret` has the exact shape of our API keys."""
    return _API_KEY_RE.fullmatch(secret) is not None


def new_task_id(entropy: Entropy) -> str:
    """A public task id."""
    return "task_" + entropy.token(16)
