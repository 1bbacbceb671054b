"""A GrsAI submit body, read as GrsAI reads it, turned into the relay's own task body (pure).

GrsAI picks how results come back from `webHook` (docs/grsai-api.md): absent or empty, the
answer is a stream; `"-1"`, the caller polls; a URL, GrsAI POSTs there. The model must be one
the posted path serves. Of the rest, only the fields that path takes are kept (the relay then
checks their values per model, as for `POST /v1/tasks`); anything else is left out, as GrsAI
ignores fields it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.domain.catalog import Catalog
from service.domain.errors import BadRequest, ValidationFailed

POLL = "-1"
GrsaiMode = Literal["stream", "poll", "callback"]


@dataclass(frozen=True, slots=True)
class GrsaiSubmit:
    """What a GrsAI submit asks for: the relay task body, and how the client wants answers."""

    body: dict[str, Any]
    mode: GrsaiMode
    shut_progress: bool = False


def _mode(web_hook: Any) -> GrsaiMode:
    if web_hook is None or web_hook == "":
        return "stream"
    if web_hook == POLL:
        return "poll"
    if isinstance(web_hook, str) and web_hook.startswith(("http://", "https://")):
        return "callback"
    raise BadRequest('webHook must be an http(s) URL or "-1"')


def translate(path: str, body: dict[str, Any], catalog: Catalog) -> GrsaiSubmit:
    """The relay task body for a GrsAI submit to `path`; 400/422 as GrsAI would refuse it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValidationFailed(
            "model is required", fields=[{"field": "model", "message": "required"}]
        )
    endpoint = catalog.endpoint(model)
    if endpoint is None or endpoint.path != path:
        served = [m for m in catalog.models if (e := catalog.endpoint(m)) and e.path == path]
        raise ValidationFailed(
            f"model {model[:100]} is not supported by {path}; use one of {', '.join(served)}",
            fields=[{"field": "model", "message": f"not a model of {path}"}],
        )
    mode = _mode(body.get("webHook"))
    shut = body.get("shutProgress", False)
    if not isinstance(shut, bool):
        raise ValidationFailed(
            "shutProgress must be a boolean",
            fields=[{"field": "shutProgress", "message": "must be a boolean"}],
        )
    native: dict[str, Any] = {"model": model, "prompt": body.get("prompt")}
    if "prompt" not in body:
        del native["prompt"]  # the relay's validation names the missing field
    given = {name: body[name] for name in sorted(endpoint.params) if name in body}
    native |= {name: v for name, v in given.items() if v is not None and v != ""}  # unset
    if mode == "callback":
        native["callback_url"] = body["webHook"]
    return GrsaiSubmit(native, mode, shut)
