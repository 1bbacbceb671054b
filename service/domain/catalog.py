"""Which GrsAI endpoint serves which model, and which parameters and values each model takes.

The catalog changes often upstream (GrsAI adds models and values without notice), so it is data
kept in one place, and `MODEL_CATALOG` extends it without a release. Each entry of that JSON
object is either the old form, a path (`{"model": "/v1/draw/nano-banana"}`: add or repoint a
model, with its family's values), or an object:

    {"model": {"endpoint": "/v1/draw/nano-banana", "values": {"aspectRatio": ["2:1"]}}}

`endpoint` may be left out for a model already known. Each list in `values` is added to the
values the model already takes for that parameter (a parameter it did not take then takes just
those); `null` lifts the check, so any value of the right type passes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from service.domain.catalog_values import (
    DEFAULT_MODELS,
    ENDPOINTS,
    FAMILY_VALUES,
    MODEL_VALUES,
    Allowed,
    Endpoint,
    Value,
)

__all__ = ["ALL_PARAMS", "DEFAULT_MODELS", "ENDPOINTS", "Allowed", "Catalog", "Endpoint", "Model"]

ALL_PARAMS: frozenset[str] = frozenset().union(*(e.params for e in ENDPOINTS))
_BY_PATH = {e.path: e for e in ENDPOINTS}


@dataclass(frozen=True, slots=True)
class Model:
    """One model: the endpoint serving it and the values it takes, by parameter."""

    name: str
    endpoint: Endpoint
    values: Mapping[str, Allowed] = field(default_factory=dict)  # unlisted: any value

    def allowed(self, param: str) -> Allowed | None:
        """What `param` may be for this model; None when any value passes."""
        return self.values.get(param)

    def problems(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One field error per parameter whose value this model does not take."""
        found: list[dict[str, Any]] = []
        for name, value in params.items():
            rule = self.values.get(name)
            if rule is None or rule.admits(value):
                continue
            if not rule.taken:
                message = f"{self.name} does not take {name}"
                found.append({"field": name, "message": message, "allowed": []})
                continue
            entry: dict[str, Any] = {"field": name, "message": f"must be {rule.describe()}"}
            entry["allowed"] = list(rule.values)
            if rule.pattern is not None:
                entry["pattern"] = rule.pattern
            found.append(entry)
        return found


def _defaults(name: str, endpoint: Endpoint) -> dict[str, Allowed]:
    """The built-in values: the family's, refined per model where the model keeps its path."""
    own = MODEL_VALUES.get(name, {}) if DEFAULT_MODELS.get(name) == endpoint.path else {}
    return {**FAMILY_VALUES.get(endpoint.path, {}), **own}


def _endpoint(name: str, path: Any) -> Endpoint:
    if not isinstance(path, str) or path not in _BY_PATH:
        known = ", ".join(sorted(_BY_PATH))
        raise ValueError(f"MODEL_CATALOG: {name}: unknown endpoint {path!r} (known: {known})")
    return _BY_PATH[path]


def _value_list(name: str, param: str, given: Any) -> tuple[Value, ...] | None:
    if given is None:
        return None
    if not isinstance(given, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in given
    ):
        raise ValueError(
            f"MODEL_CATALOG: {name}: values.{param} must be a list of strings or integers, or null"
        )
    return tuple(given)


def _entry(name: str, spec: Any, known: Model | None) -> Model:
    """One MODEL_CATALOG entry, in either form, applied over what is known of the model."""
    if isinstance(spec, str):
        endpoint = _endpoint(name, spec)
        return Model(name, endpoint, _defaults(name, endpoint))
    if not isinstance(spec, dict):
        raise ValueError(f"MODEL_CATALOG: {name}: give a path or an object with endpoint/values")
    extra = sorted(set(spec) - {"endpoint", "values"})
    if extra:
        raise ValueError(f"MODEL_CATALOG: {name}: unknown keys {', '.join(extra)}; use endpoint")
    if "endpoint" in spec:
        endpoint = _endpoint(name, spec["endpoint"])
    elif known is not None:
        endpoint = known.endpoint
    else:
        raise ValueError(f"MODEL_CATALOG: {name}: endpoint is required for a new model")
    values = dict(_defaults(name, endpoint))
    given = spec.get("values", {})
    if not isinstance(given, dict):
        raise ValueError(f"MODEL_CATALOG: {name}: values must be an object of parameter -> list")
    for param, listed in given.items():
        if param not in endpoint.params - {"shutProgress"}:
            raise ValueError(
                f"MODEL_CATALOG: {name}: {param} is not a parameter of {endpoint.path}"
            )
        more = _value_list(name, param, listed)
        if more is None:
            values.pop(param, None)
        else:
            rule = values.get(param, Allowed())
            added = tuple(v for v in more if v not in rule.values)
            values[param] = replace(rule, values=rule.values + added)
    return Model(name, endpoint, values)


class Catalog:
    """Model name -> the model's endpoint and values."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self._models = dict(models)

    @classmethod
    def from_override(cls, override_json: str | None) -> Catalog:
        """Build the default catalog, extended by MODEL_CATALOG (see the module's docstring)."""
        models = {
            name: Model(name, _BY_PATH[path], _defaults(name, _BY_PATH[path]))
            for name, path in DEFAULT_MODELS.items()
        }
        if override_json:
            extra = json.loads(override_json)
            if not isinstance(extra, dict):
                raise ValueError("MODEL_CATALOG must be a JSON object of model name -> entry")
            for name, spec in extra.items():
                models[name] = _entry(name, spec, models.get(name))
        return cls(models)

    def model(self, name: str) -> Model | None:
        """The model called `name`, or None when it is unknown."""
        return self._models.get(name)

    def endpoint(self, name: str) -> Endpoint | None:
        """Return the endpoint serving `name`, or None when the model is unknown."""
        found = self._models.get(name)
        return found.endpoint if found else None

    @property
    def models(self) -> list[str]:
        """Every known model name, sorted."""
        return sorted(self._models)
