"""The serving heap's settling: garbage of a replaced model is freed, survivors are frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from machine_health import heap


class _Model:
    """Stands for a loaded model: an object in a reference cycle (as Keras layers are)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def test_settle_frees_the_replaced_model_and_freezes_the_new_one(unfrozen: None) -> None:
    old = _Model()
    gone = weakref.ref(old)
    new = _Model()
    heap.settle()
    del old  # replaced by a reload: only a collection can free a cycle
    frozen = heap.settle()
    assert gone() is None
    assert frozen > 0 and gc.get_freeze_count() > 0
    assert REGISTRY.get_sample_value("machine_health_gc_frozen_objects") == frozen
    assert new.me is new


def test_collections_are_timed_by_generation(unfrozen: None) -> None:
    heap.watch_pauses()
    heap.watch_pauses()  # idempotent: one callback
    assert gc.callbacks.count(heap._observe) == 1
    name, labels = "machine_health_gc_pause_seconds_count", {"generation": "2"}
    before = REGISTRY.get_sample_value(name, labels) or 0
    gc.collect()
    assert REGISTRY.get_sample_value(name, labels) == before + 1
