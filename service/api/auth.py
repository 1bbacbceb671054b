"""Client authentication: `Authorization: Bearer <api key>`, looked up by hash."""

from __future__ import annotations

from starlette.requests import Request

from service.api.context import services
from service.domain.credentials import api_key_well_formed, hash_secret
from service.domain.errors import Unauthorized
from service.domain.records import ApiKey
from service.storage import Storage


async def authenticate(request: Request) -> ApiKey:
    """Return the caller's active API key or raise 401."""
    svc = services(request)
    return await api_key_from(
        svc.storage, request.headers.get("authorization", ""), demo_mode=svc.demo_mode
    )


async def api_key_from(storage: Storage, header: str, *, demo_mode: bool = False) -> ApiKey:
    """The active API key an Authorization header carries, or 401.

    A key made by demo mode is refused unless this relay runs in demo mode: its secret was
    printed in a banner, and must not spend real GrsAI credits on the same database later.
    """
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <api key>")
    secret = secret.strip()
    key = None
    if api_key_well_formed(secret):
        key = await storage.api_key_by_hash(hash_secret(secret))
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    if key.demo and not demo_mode:
        raise Unauthorized(
            "a demo key works only while the relay runs in demo mode (without GRSAI_API_KEY);"
            " create a key with `grsai-relay keys create`"
        )
    return key
