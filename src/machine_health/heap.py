"""The serving process's heap and the pauses of Python's garbage collector.

A loaded model set (TensorFlow, Keras, scikit-learn, MLflow) is about half a million
long-lived Python objects. A full (generation 2) collection walks all of them: 0.3-0.6 s on this
kind of machine, during which the event loop stands still, and traffic triggers one every few
seconds. Those pauses were the API's p99. Once the models are loaded the heap is frozen
(`gc.freeze`: moved to a generation the collector never walks), so the collections traffic
triggers walk only what traffic allocates. A reload settles the heap again: unfreeze, collect
once (the replaced model's reference cycles are freed), freeze.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from machine_health import telemetry

_lock = threading.Lock()
_started: list[float] = []  # the running collection's start (collections never nest)


def settle() -> int:
    """Collect once and freeze what survives; the number of objects now frozen."""
    with _lock:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    telemetry.GC_FROZEN.set(frozen)
    return frozen


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        telemetry.GC_PAUSE.labels(generation=str(info["generation"])).observe(
            time.perf_counter() - _started.pop()
        )


def watch_pauses() -> None:
    """Time every collection of this process into `machine_health_gc_pause_seconds` (once)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
