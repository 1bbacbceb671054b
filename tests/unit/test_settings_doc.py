"""The documented configuration matches the code."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name.lower(): value for name, value in pairs}


def test_env_example_lists_every_setting() -> None:
    """Every setting appears in .env.example and nothing stale is listed there."""
    assert set(_documented()) == set(Settings.model_fields)


def test_env_example_defaults_are_the_code_defaults() -> None:
    """Each documented default equals the default in code (empty means unset)."""
    for name, value in _documented().items():
        default = Settings.model_fields[name].default
        shown = "" if default is None else str(default).lower()
        assert value.lower() in (shown, shown.removesuffix(".0")), name
