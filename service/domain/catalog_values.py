"""The built-in catalog data: GrsAI's submit endpoints, their models, and the allowed values.

From docs/grsai-api.md ("Submit endpoints" and "Allowed values per model", as GrsAI's own client
plugin offers them). Where GrsAI lists no closed set (flux and Veo ratios, sora-image's
`aspectRatio`, the 33 sizes of gpt-image-2-vip) only the form is checked, so a value GrsAI adds
later is not refused for want of a release; `MODEL_CATALOG` extends every list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Value = str | int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GrsAI submit path and the body fields it accepts besides model/prompt."""

    path: str
    family: str
    params: frozenset[str]


@dataclass(frozen=True, slots=True)
class Allowed:
    """The values one parameter may take: those listed, and any string matching `pattern`.

    With neither, the parameter is not taken at all.
    """

    values: tuple[Value, ...] = ()
    pattern: str | None = None
    form: str = ""  # how `pattern` reads to a person

    @property
    def taken(self) -> bool:
        """Whether the model takes this parameter at all."""
        return bool(self.values) or self.pattern is not None

    def admits(self, value: Any) -> bool:
        """Whether `value` is allowed (`True` is not the integer 1 here)."""
        if isinstance(value, bool):
            return False
        if any(type(value) is type(v) and value == v for v in self.values):
            return True
        return (
            self.pattern is not None
            and isinstance(value, str)
            and re.fullmatch(self.pattern, value) is not None
        )

    def describe(self) -> str:
        """`one of a, b, c`, and the pattern's form when there is one."""
        listed = ", ".join(str(v) for v in self.values)
        if self.pattern is None:
            return f"one of {listed}"
        return f"{self.form} (e.g. {listed})" if listed else self.form


_COMMON = frozenset({"shutProgress"})
COMPLETIONS, NANO_BANANA, FLUX = "/v1/draw/completions", "/v1/draw/nano-banana", "/v1/draw/flux"
SORA, VEO = "/v1/video/sora-video", "/v1/video/veo"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        COMPLETIONS,
        "gpt-image",
        _COMMON | {"urls", "size", "variants", "aspectRatio", "quality", "background"},
    ),
    Endpoint(NANO_BANANA, "nano-banana", _COMMON | {"urls", "aspectRatio", "imageSize"}),
    Endpoint(FLUX, "flux", _COMMON | {"urls", "aspectRatio"}),
    Endpoint(
        SORA,
        "sora-video",
        _COMMON | {"url", "aspectRatio", "duration", "size", "remixTargetId", "characters"},
    ),
    Endpoint(VEO, "veo", _COMMON | {"aspectRatio", "firstFrameUrl", "lastFrameUrl", "urls"}),
)

DEFAULT_MODELS: dict[str, str] = {
    **dict.fromkeys(("sora-image", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-vip"), COMPLETIONS),
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
        NANO_BANANA,
    ),
    **dict.fromkeys(
        ("flux-kontext-pro", "flux-kontext-max", "flux-pro-1.1", "flux-pro-1.1-ultra"), FLUX
    ),
    "sora-2": SORA,
    **dict.fromkeys(
        (
            "veo3.1-fast",
            "veo3.1-fast-1080p",
            "veo3.1-fast-4k",
            "veo3.1-pro",
            "veo3.1-pro-1080p",
            "veo3.1-pro-4k",
        ),
        VEO,
    ),
}

NOT_TAKEN = Allowed()
RATIO = Allowed(("auto",), r"[1-9][0-9]?:[1-9][0-9]?", "auto or a ratio W:H")
NANO_RATIOS = ("auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "5:4", "4:5", "21:9")
NANO_2_RATIOS = Allowed((*NANO_RATIOS, "1:4", "4:1", "1:8", "8:1"))
GPT_IMAGE_2_SIZES = Allowed(
    ("auto", "1024x1024", "1536x1024", "1024x1536", "1448x1086", "1086x1448", "1774x887",
     "887x1774")
)  # fmt: skip
_SIDE = r"(?:[1-9][0-9]{2}|[12][0-9]{3}|3[0-7][0-9]{2}|38[0-3][0-9]|3840)"  # 100 to 3840
VIP_SIZES = Allowed(
    ("auto", "2048x2048", "2880x2880", "3504x2336", "3840x1648", "1280x3840", "3840x2160"),
    rf"{_SIDE}x{_SIDE}",
    "auto or WxH with each side 100 to 3840",
)

# Per endpoint: what every model of that family takes (and what a model added to it gets).
FAMILY_VALUES: dict[str, dict[str, Allowed]] = {
    COMPLETIONS: {
        "variants": Allowed((1, 2)),
        "size": Allowed(("auto", "1:1", "3:2", "2:3")),
        "aspectRatio": RATIO,
    },
    NANO_BANANA: {"aspectRatio": Allowed(NANO_RATIOS), "imageSize": Allowed(("1K", "2K", "4K"))},
    FLUX: {"aspectRatio": RATIO},
    SORA: {
        "aspectRatio": Allowed(("16:9", "9:16")),
        "duration": Allowed((10, 15)),
        "size": Allowed(("small", "large")),
    },
    VEO: {"aspectRatio": RATIO},
}

# Per model, where it differs from its family.
MODEL_VALUES: dict[str, dict[str, Allowed]] = {
    "gpt-image-2": {"aspectRatio": GPT_IMAGE_2_SIZES, "size": NOT_TAKEN},
    "gpt-image-2-vip": {"aspectRatio": VIP_SIZES, "size": NOT_TAKEN},
    "nano-banana": {"imageSize": NOT_TAKEN},
    "nano-banana-fast": {"imageSize": NOT_TAKEN},
    "nano-banana-2": {"aspectRatio": NANO_2_RATIOS},
    "nano-banana-2-cl": {"aspectRatio": NANO_2_RATIOS, "imageSize": Allowed(("1K", "2K"))},
    "nano-banana-2-4k-cl": {"aspectRatio": NANO_2_RATIOS, "imageSize": Allowed(("4K",))},
    "nano-banana-pro-vip": {"imageSize": Allowed(("1K", "2K"))},
    "nano-banana-pro-4k-vip": {"imageSize": Allowed(("4K",))},
}
