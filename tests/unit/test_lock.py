"""The lock files pin what pyproject.toml asks for (run `scripts/lock` after changing it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIX = "pyproject.toml and the lock disagree: run scripts/lock and commit requirements/"


def pins(name: str) -> dict[str, str]:
    """Package -> exact version in requirements/<name>.txt."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text()
    return {canonicalize_name(n): v for n, v in PIN.findall(text)}


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [
        ("runtime", PYPROJECT["dependencies"]),
        ("dev", PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["dev"]),
    ],
)
def test_every_dependency_is_pinned_within_its_range(lock: str, wanted: list[str]) -> None:
    """Each dependency of pyproject.toml has an exact pin, inside the range pyproject allows."""
    pinned = pins(lock)
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements/{lock}.txt; {FIX}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside {requirement.specifier}; {FIX}"
        )


def test_dev_tools_sit_on_exactly_the_runtime_versions() -> None:
    """What `scripts/test` tests is what `scripts/serve` and the Docker image install."""
    runtime, dev = pins("runtime"), pins("dev")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_every_pin_carries_hashes() -> None:
    """pip installs the lock with --require-hashes: every pinned package lists its hashes."""
    for lock in ("runtime", "dev"):
        entries = re.split(
            r"\n(?=[A-Za-z0-9])", (ROOT / "requirements" / f"{lock}.txt").read_text()
        )
        for entry in entries:
            if PIN.match(entry):
                assert "--hash=sha256:" in entry, entry.splitlines()[0]
