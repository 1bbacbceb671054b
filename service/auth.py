"""Client authentication: `Authorization: Bearer <api key>`, looked up by hash."""

from __future__ import annotations

from starlette.requests import Request

from service.context import services
from service.credentials import api_key_well_formed, hash_secret
from service.errors import Unauthorized
from service.records import ApiKey


async def authenticate(request: Request) -> ApiKey:
    """Return the caller's active API key or raise 401."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <api key>")
    secret = secret.strip()
    key = None
    if api_key_well_formed(secret):
        key = await services(request).storage.api_key_by_hash(hash_secret(secret))
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return key
