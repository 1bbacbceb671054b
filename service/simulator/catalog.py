"""Which models each submit path takes, and the task-object shape each model answers with.

The shapes differ on purpose, exactly as the real API's do, so receivers learn to read
`results[*].url` first and top-level `url` second, and to accept `fail_reason`. Models that put
their result at the top level carry it in `results` too, as GrsAI does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Shape(StrEnum):
    """Where a model puts its results in the task object."""

    RESULTS_CONTENT = "results[{url,content}]"  # nano-banana
    RESULTS_SIZED = "results[{url,width,height}]"  # gpt-image-2
    TOP_LEVEL = "url,width,height"  # sora-image, gpt-image-1.5, flux, veo *-fast (+ results)
    RESULTS_PID = "results[{url,pid}]"  # sora-2
    RESULTS_URL = "results[{url}]"  # other veo models


class Media(StrEnum):
    """The kind of file a model produces (the value is the file extension)."""

    PNG = "png"
    MP4 = "mp4"

    @property
    def content_type(self) -> str:
        """The HTTP Content-Type of such a file."""
        return "image/png" if self is Media.PNG else "video/mp4"


@dataclass(frozen=True)
class ModelSpec:
    """One model: its name and how its task objects look."""

    name: str
    path: str
    shape: Shape
    media: Media = Media.PNG
    failure_key: str = "failure_reason"
    results_key: bool = True  # False: no `results` key until the task has succeeded
    max_variants: int = 1


@dataclass(frozen=True)
class SubmitPath:
    """One submit endpoint and the models it accepts."""

    path: str
    models: tuple[ModelSpec, ...]

    def model(self, name: str) -> ModelSpec | None:
        """The spec of `name` if this path accepts it."""
        return next((m for m in self.models if m.name == name), None)


def _models(
    path: str,
    names: tuple[str, ...],
    shape: Shape,
    *,
    media: Media = Media.PNG,
    failure_key: str = "failure_reason",
    results_key: bool = True,
    max_variants: int = 1,
) -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(n, path, shape, media, failure_key, results_key, max_variants) for n in names
    )


NANO_BANANA_MODELS = (
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
)
FLUX_MODELS = ("flux-kontext-pro", "flux-kontext-max", "flux-pro-1.1", "flux-pro-1.1-ultra")
VEO_FAST_MODELS = ("veo3.1-fast", "veo3.1-fast-1080p", "veo3.1-fast-4k")
VEO_OTHER_MODELS = ("veo3.1-pro", "veo3.1-pro-1080p", "veo3.1-pro-4k")


def submit_paths() -> tuple[SubmitPath, ...]:
    """The five submit endpoints with their model lists, as in docs/grsai-api.md."""
    draw, veo = "/v1/draw/completions", "/v1/video/veo"
    flux, sora = "/v1/draw/flux", "/v1/video/sora-video"
    return (
        SubmitPath(
            draw,
            _models(draw, ("sora-image", "gpt-image-1.5"), Shape.TOP_LEVEL, max_variants=2)
            + _models(
                draw, ("gpt-image-2", "gpt-image-2-vip"), Shape.RESULTS_SIZED, max_variants=2
            ),
        ),
        SubmitPath(
            "/v1/draw/nano-banana",
            _models("/v1/draw/nano-banana", NANO_BANANA_MODELS, Shape.RESULTS_CONTENT),
        ),
        SubmitPath(
            flux,
            _models(
                flux, FLUX_MODELS, Shape.TOP_LEVEL, failure_key="fail_reason", results_key=False
            ),
        ),
        SubmitPath(sora, _models(sora, ("sora-2",), Shape.RESULTS_PID, media=Media.MP4)),
        SubmitPath(
            veo,
            _models(veo, VEO_FAST_MODELS, Shape.TOP_LEVEL, media=Media.MP4)
            + _models(veo, VEO_OTHER_MODELS, Shape.RESULTS_URL, media=Media.MP4),
        ),
    )


def find_model(name: str) -> ModelSpec | None:
    """The spec of a model on any path."""
    for sp in submit_paths():
        if (spec := sp.model(name)) is not None:
            return spec
    return None
