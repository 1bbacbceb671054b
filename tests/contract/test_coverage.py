"""The contract suite exercises every operation of the `Storage` protocol."""

from __future__ import annotations

import inspect
from pathlib import Path

from service.storage import Storage

HERE = Path(__file__).parent


def test_every_protocol_method_is_exercised() -> None:
    """Each method of `Storage` is called somewhere in this suite."""
    suite = "".join(path.read_text() for path in sorted(HERE.glob("*.py")))
    methods = [name for name, _ in inspect.getmembers(Storage, inspect.isfunction)]
    methods = [name for name in methods if not name.startswith("_")]
    assert len(methods) > 30
    assert sorted(m for m in methods if f".{m}(" not in suite) == []
