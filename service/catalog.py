"""Which GrsAI endpoint serves which model, and which parameters each endpoint takes.

The catalog changes often upstream, so it lives here in one place and `MODEL_CATALOG`
(a JSON object `{"model": "/v1/draw/..."}`) adds or repoints models without a release.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GrsAI submit path and the body fields it accepts besides model/prompt."""

    path: str
    family: str
    params: frozenset[str]


_COMMON = frozenset({"shutProgress"})
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/v1/draw/completions",
        "gpt-image",
        _COMMON | {"urls", "size", "variants", "aspectRatio", "quality", "background"},
    ),
    Endpoint("/v1/draw/nano-banana", "nano-banana", _COMMON | {"urls", "aspectRatio", "imageSize"}),
    Endpoint("/v1/draw/flux", "flux", _COMMON | {"urls", "aspectRatio"}),
    Endpoint(
        "/v1/video/sora-video",
        "sora-video",
        _COMMON | {"url", "aspectRatio", "duration", "size", "remixTargetId", "characters"},
    ),
    Endpoint(
        "/v1/video/veo", "veo", _COMMON | {"aspectRatio", "firstFrameUrl", "lastFrameUrl", "urls"}
    ),
)

DEFAULT_MODELS: dict[str, str] = {
    **dict.fromkeys(
        ("sora-image", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-vip"), "/v1/draw/completions"
    ),
    **dict.fromkeys(
        (
            "nano-banana-fast",
            "nano-banana",
            "nano-banana-pro",
            "nano-banana-pro-vt",
            "nano-banana-pro-cl",
            "nano-banana-pro-vip",
            "nano-banana-pro-4k-vip",
            "nano-banana-2",
            "nano-banana-2-cl",
            "nano-banana-2-2k-cl",
            "nano-banana-2-4k-cl",
        ),
        "/v1/draw/nano-banana",
    ),
    **dict.fromkeys(
        ("flux-kontext-pro", "flux-kontext-max", "flux-pro-1.1", "flux-pro-1.1-ultra"),
        "/v1/draw/flux",
    ),
    "sora-2": "/v1/video/sora-video",
    **dict.fromkeys(
        (
            "veo3.1-fast",
            "veo3.1-fast-1080p",
            "veo3.1-fast-4k",
            "veo3.1-pro",
            "veo3.1-pro-1080p",
            "veo3.1-pro-4k",
        ),
        "/v1/video/veo",
    ),
}

ALL_PARAMS: frozenset[str] = frozenset().union(*(e.params for e in ENDPOINTS))


class Catalog:
    """Model name -> endpoint lookup."""

    def __init__(self, models: Mapping[str, str]) -> None:
        by_path = {e.path: e for e in ENDPOINTS}
        unknown = sorted({p for p in models.values() if p not in by_path})
        if unknown:
            raise ValueError(f"catalog names unknown endpoints: {', '.join(unknown)}")
        self._models = {m: by_path[p] for m, p in models.items()}

    @classmethod
    def from_override(cls, override_json: str | None) -> Catalog:
        """Build the default catalog, extended by a JSON object of model -> path."""
        models = dict(DEFAULT_MODELS)
        if override_json:
            extra = json.loads(override_json)
            if not isinstance(extra, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
            ):
                raise ValueError("MODEL_CATALOG must be a JSON object of model name -> path")
            models.update(extra)
        return cls(models)

    def endpoint(self, model: str) -> Endpoint | None:
        """Return the endpoint serving `model`, or None when the model is unknown."""
        return self._models.get(model)

    @property
    def models(self) -> list[str]:
        """Every known model name, sorted."""
        return sorted(self._models)
