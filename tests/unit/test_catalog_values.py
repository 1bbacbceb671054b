"""Each model's allowed parameter values: checked at submit, listed when refused, extensible."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.domain.catalog import Allowed, Catalog
from tests.unit.conftest import MakeRelay, Relay
from tests.unit.test_core_api import error_of

JSON = dict[str, Any]
NANO_RATIOS = ["auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "5:4", "4:5", "21:9"]


async def test_aspect_ratio_banana_is_422_listing_the_allowed_values(relay: Relay) -> None:
    """`aspectRatio: "banana"` is refused with the model's allowed ratios; nothing is sent."""
    error = error_of(await relay.submit("nano-banana-pro", aspectRatio="banana"), 422)
    assert error["code"] == "validation_failed"
    (field,) = error["fields"]
    assert field["field"] == "aspectRatio"
    assert field["allowed"] == NANO_RATIOS
    assert "banana" in error["message"]
    assert "16:9" in field["message"]
    assert relay.grsai.submits == 0


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("nano-banana-pro", {"aspectRatio": "21:9", "imageSize": "4K"}),
        ("nano-banana-2", {"aspectRatio": "1:8", "imageSize": "1K"}),
        ("nano-banana-2-cl", {"aspectRatio": "4:1", "imageSize": "2K"}),
        ("nano-banana-2-4k-cl", {"imageSize": "4K"}),
        ("nano-banana-pro-4k-vip", {"imageSize": "4K"}),
        ("nano-banana", {"aspectRatio": "auto"}),
        ("sora-image", {"size": "3:2", "variants": 2}),
        ("gpt-image-1.5", {"size": "auto"}),
        ("gpt-image-2", {"aspectRatio": "1774x887", "quality": "high"}),
        ("gpt-image-2-vip", {"aspectRatio": "3840x2160"}),
        ("gpt-image-2-vip", {"aspectRatio": "1280x3840"}),
        ("sora-2", {"aspectRatio": "9:16", "duration": 15, "size": "large"}),
        ("flux-kontext-pro", {"aspectRatio": "21:9"}),
        ("veo3.1-pro", {"aspectRatio": "16:9"}),
    ],
)
async def test_documented_values_are_accepted(relay: Relay, model: str, params: JSON) -> None:
    """Every value GrsAI documents for a model is accepted and passed on as is."""
    await relay.created(model, **params)
    sent = relay.grsai.submit_bodies[-1]
    assert {k: sent[k] for k in params} == params


@pytest.mark.parametrize(
    ("model", "field", "value", "allowed"),
    [
        ("nano-banana-pro", "aspectRatio", "1:8", NANO_RATIOS),
        ("nano-banana-2-2k-cl", "aspectRatio", "8:1", NANO_RATIOS),
        ("nano-banana-pro", "imageSize", "8K", ["1K", "2K", "4K"]),
        ("nano-banana-2-cl", "imageSize", "4K", ["1K", "2K"]),
        ("nano-banana-pro-vip", "imageSize", "4K", ["1K", "2K"]),
        ("nano-banana-2-4k-cl", "imageSize", "2K", ["4K"]),
        ("sora-image", "size", "16:9", ["auto", "1:1", "3:2", "2:3"]),
        ("gpt-image-2", "aspectRatio", "16:9", None),
        ("sora-2", "duration", 12, [10, 15]),
        ("sora-2", "size", "medium", ["small", "large"]),
        ("sora-2", "aspectRatio", "1:1", ["16:9", "9:16"]),
        ("gpt-image-2", "variants", 3, [1, 2]),
    ],
)
async def test_values_outside_the_model_s_list_are_422(
    relay: Relay, model: str, field: str, value: Any, allowed: list[Any] | None
) -> None:
    """A value the model does not take is refused naming the field and its allowed values."""
    error = error_of(await relay.submit(model, **{field: value}), 422)
    (entry,) = error["fields"]
    assert entry["field"] == field
    if allowed is not None:
        assert entry["allowed"] == allowed
    assert str(value) in error["message"]


@pytest.mark.parametrize(
    ("model", "value"),
    [
        ("gpt-image-2-vip", "4000x2000"),
        ("gpt-image-2-vip", "banana"),
        ("flux-kontext-pro", "banana"),
        ("veo3.1-fast", "wide"),
        ("sora-image", "16/9"),
    ],
)
async def test_free_form_values_must_have_the_documented_form(
    relay: Relay, model: str, value: str
) -> None:
    """Where GrsAI lists no closed set, the value must still have the form (WxH, W:H or auto)."""
    error = error_of(await relay.submit(model, aspectRatio=value), 422)
    (entry,) = error["fields"]
    assert entry["field"] == "aspectRatio"
    assert "pattern" in entry


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [("nano-banana", "imageSize", "1K"), ("nano-banana-fast", "imageSize", "2K"),
     ("gpt-image-2", "size", "1:1")],
)  # fmt: skip
async def test_parameters_a_model_does_not_take_are_422(
    relay: Relay, model: str, field: str, value: str
) -> None:
    """A parameter of the endpoint that this model does not take is refused, with no values."""
    error = error_of(await relay.submit(model, **{field: value}), 422)
    assert error["fields"] == [
        {"field": field, "message": f"{model} does not take {field}", "allowed": []}
    ]


# --- MODEL_CATALOG ----------------------------------------------------------------------------


def catalog(override: JSON) -> Catalog:
    """The catalog with `override` as MODEL_CATALOG."""
    return Catalog.from_override(json.dumps(override))


def test_the_old_override_form_still_adds_and_repoints_models() -> None:
    """`{"model": "/v1/draw/..."}` adds a model (with its family's values) or repoints one."""
    found = catalog({"nano-banana-3": "/v1/draw/nano-banana", "flux-pro-1.1": "/v1/video/veo"})
    added = found.model("nano-banana-3")
    assert added is not None
    assert added.endpoint.path == "/v1/draw/nano-banana"
    assert added.allowed("aspectRatio") == Allowed(tuple(NANO_RATIOS))
    repointed = found.model("flux-pro-1.1")
    assert repointed is not None
    assert repointed.endpoint.path == "/v1/video/veo"


async def test_values_in_the_override_extend_the_built_in_ones(make_relay: MakeRelay) -> None:
    """`{"model": {"values": {"aspectRatio": [...]}}}` adds values; the old ones stay valid."""
    override = {"nano-banana-pro": {"values": {"aspectRatio": ["2:1"], "imageSize": ["8K"]}}}
    relay = await make_relay(model_catalog=json.dumps(override))
    await relay.created("nano-banana-pro", aspectRatio="2:1", imageSize="8K")
    await relay.created("nano-banana-pro", aspectRatio="16:9")
    error = error_of(await relay.submit("nano-banana-pro", aspectRatio="7:3"), 422)
    assert error["fields"][0]["allowed"] == [*NANO_RATIOS, "2:1"]


async def test_a_new_model_with_its_endpoint_and_values(make_relay: MakeRelay) -> None:
    """A new model in the object form names its endpoint; null lifts a check altogether."""
    override = {
        "sora-3": {
            "endpoint": "/v1/video/sora-video",
            "values": {"duration": [20], "aspectRatio": None},
        }
    }
    relay = await make_relay(model_catalog=json.dumps(override))
    await relay.created("sora-3", duration=20, aspectRatio="4:3")
    assert relay.grsai.submit_paths[-1] == "/v1/video/sora-video"
    error = error_of(await relay.submit("sora-3", duration=12), 422)
    assert error["fields"][0]["allowed"] == [10, 15, 20]


async def test_a_value_list_makes_a_parameter_taken_again(make_relay: MakeRelay) -> None:
    """Values for a parameter the model does not take make it take exactly those."""
    override = {"nano-banana": {"values": {"imageSize": ["1K"]}}}
    relay = await make_relay(model_catalog=json.dumps(override))
    await relay.created("nano-banana", imageSize="1K")
    assert error_of(await relay.submit("nano-banana", imageSize="2K"), 422)["fields"][0][
        "allowed"
    ] == ["1K"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"new-model": {"values": {}}}, "new-model: endpoint"),
        ({"nano-banana": {"endpoint": "/v1/draw/nope"}}, "unknown endpoint"),
        ({"nano-banana": {"values": {"duration": [10]}}}, "nano-banana: duration"),
        ({"nano-banana": {"values": {"aspectRatio": "2:1"}}}, "aspectRatio"),
        ({"nano-banana": {"values": {"aspectRatio": [True]}}}, "aspectRatio"),
        ({"nano-banana": {"values": {"aspectRatio": [{"x": 1}]}}}, "aspectRatio"),
        ({"nano-banana": {"values": []}}, "values"),
        ({"nano-banana": {"path": "/v1/draw/flux"}}, "path"),
        ({"nano-banana": 5}, "nano-banana"),
    ],
)
def test_bad_overrides_are_refused_naming_the_problem(override: JSON, says: str) -> None:
    """A malformed MODEL_CATALOG entry is refused with a message naming the model and field."""
    with pytest.raises(ValueError, match="MODEL_CATALOG") as caught:
        catalog(override)
    assert says in str(caught.value)
