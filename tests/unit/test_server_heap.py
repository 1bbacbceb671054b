"""The serving process tunes the cyclic GC before it takes requests."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service.server import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture(name="restored_gc")
def _restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    """Start-up objects leave the collector's sight; the young generation waits longer."""
    _, middle, old = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("restored_gc")
def test_garbage_made_after_settling_is_still_collected() -> None:
    """A reference cycle made while serving is still freed by the collector."""
    settle_heap()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    del a, b
    gc.collect()
    assert watch() is None
