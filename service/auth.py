"""Client authentication: `Authorization: Bearer <api key>`, looked up by hash."""

from __future__ import annotations

from starlette.requests import Request

from service.context import services
from service.credentials import api_key_well_formed, hash_secret
from service.errors import Unauthorized
from service.records import ApiKey
from service.storage import Storage


async def authenticate(request: Request) -> ApiKey:
    """Return the caller's active API key or raise 401."""
    return await api_key_from(services(request).storage, request.headers.get("authorization", ""))


async def api_key_from(storage: Storage, header: str) -> ApiKey:
    """The active API key an Authorization header carries, or 401."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <api key>")
    secret = secret.strip()
    key = None
    if api_key_well_formed(secret):
        key = await storage.api_key_by_hash(hash_secret(secret))
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return key
