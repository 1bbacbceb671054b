"""The one tree of errors grsai-relay raises on purpose (pure: `service.api.errors` maps it to
JSON error responses). Each class carries the `code` and HTTP `status` a client sees.

RelayError                      -> 500 internal_error (never raised on purpose)
├── ClientError                 -> 4xx: the request is at fault
│   ├── BadRequest              -> 400 bad_request, invalid_cursor, invalid_idempotency_key,
│   │                                  client_disconnected
│   ├── Unauthorized            -> 401 unauthorized, signed_out (the dashboard's session)
│   ├── Forbidden               -> 403 forbidden, cross_origin, csrf_failed (dashboard forms)
│   ├── NotFound                -> 404 not_found, asset_pending/failed/pruned/missing
│   ├── RequestTimeout          -> 408 request_timeout (body too slow)
│   ├── Conflict                -> 409 idempotency_in_flight, nothing_to_redeliver
│   ├── PayloadTooLarge         -> 413 payload_too_large
│   ├── UnsupportedMediaType    -> 415 unsupported_media_type
│   ├── RangeNotSatisfiable     -> 416 range_not_satisfiable
│   ├── ValidationFailed        -> 422 validation_failed, idempotency_key_reused (+ `fields`)
│   └── RateLimited             -> 429 rate_limited (+ `retry_after`)
├── Malformed                   -> 400: data we did not write cannot be read (a parser's refusal;
│   │                                  from GrsAI it becomes an UpstreamProtocolError)
│   ├── InvalidJson             -> 400 invalid_json
│   └── InvalidTaskObject       -> 400 invalid_payload (+ `fields`)
├── UpstreamError               -> GrsAI misbehaved or is unreachable
│   ├── UpstreamRejected        -> 502 upstream_rejected (code != 0, 401, 429, ...)
│   ├── UpstreamUnavailable     -> 503 upstream_unavailable (surely not submitted)
│   ├── UpstreamOutcomeUnknown  -> 503 upstream_outcome_unknown (sent; GrsAI answered 5xx)
│   │   └── UpstreamTimeout     -> 503 upstream_timeout (sent, no answer in time)
│   └── UpstreamProtocolError   -> 502 upstream_protocol_error (answer we cannot read)
├── StorageUnavailable          -> 503 storage_unavailable (database busy, locked, read-only)
└── AssetStoreUnavailable       -> 503 asset_store_unavailable (the S3 file store is down)
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base of every error grsai-relay raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.replayed = False  # the answer repeats an earlier one (same Idempotency-Key)


class ClientError(RelayError):
    """The request is at fault."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code


class BadRequest(ClientError):
    """Malformed input."""


class Unauthorized(ClientError):
    """Missing or unknown credentials."""

    status = 401
    code = "unauthorized"


class NotFound(ClientError):
    """No such resource for this caller."""

    status = 404
    code = "not_found"


class Conflict(ClientError):
    """The same request is still being processed."""

    status = 409
    code = "conflict"


class Forbidden(ClientError):
    """Not allowed from here."""

    status = 403
    code = "forbidden"


class RequestTimeout(ClientError):
    """The client did not send its body in time."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ClientError):
    """The body exceeds the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    """The body is not in a format this endpoint reads."""

    status = 415
    code = "unsupported_media_type"


class RangeNotSatisfiable(ClientError):
    """The requested byte range lies outside the file."""

    status = 416
    code = "range_not_satisfiable"


class ValidationFailed(ClientError):
    """The body parsed but its fields are wrong; `fields` lists each problem."""

    status = 422
    code = "validation_failed"


class RateLimited(ClientError):
    """Too many submissions from this API key; `retry_after` says when to come back."""

    status = 429
    code = "rate_limited"


class Malformed(RelayError):
    """Data we did not write (a body, a GrsAI answer) cannot be read; the message says where."""

    status = 400
    code = "malformed"


class InvalidJson(Malformed):
    """Not strict UTF-8 JSON, or not the JSON value expected (an object)."""

    code = "invalid_json"


class InvalidTaskObject(Malformed):
    """A GrsAI task object of the wrong shape; `fields` names the field."""

    code = "invalid_payload"


class UpstreamError(RelayError):
    """GrsAI did not do what we asked."""

    status = 502
    code = "upstream_error"

    def __init__(self, message: str, *, http_status: int | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.http_status = http_status


class UpstreamRejected(UpstreamError):
    """GrsAI answered and refused (code != 0, 401, 429, insufficient credits, ...)."""

    code = "upstream_rejected"


class UpstreamUnavailable(UpstreamError):
    """GrsAI could not be reached; the request surely did not arrive."""

    status = 503
    code = "upstream_unavailable"


class UpstreamOutcomeUnknown(UpstreamError):
    """The request reached GrsAI (or a gateway in front of it) and may or may not have worked."""

    status = 503
    code = "upstream_outcome_unknown"


class UpstreamTimeout(UpstreamOutcomeUnknown):
    """The request was sent but no answer came in time: the outcome is unknown."""

    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """GrsAI answered something we cannot read (HTML, truncated JSON, wrong shape)."""

    code = "upstream_protocol_error"


class StorageUnavailable(RelayError):
    """The database cannot take the write or read right now; try again later."""

    status = 503
    code = "storage_unavailable"


class AssetStoreUnavailable(RelayError):
    """The file store (an S3 bucket) cannot be reached or refuses us; try again later."""

    status = 503
    code = "asset_store_unavailable"
