"""The data of a retraining run, built by its domain (`Domain.training_set`, `reference_set`...).

- field holdout = the most recent labelled snapshot rows of each asset group
  (`Domain.field_holdout`): held out of THIS run's training set, scored by the gate as the
  field slice;
- training set = the base real training data minus the domain's frozen reference carve-out +
  the other archived labelled rows of the run's snapshot, converted to what `train` takes;
- reference set = that frozen carve-out of the base training data (the gate's reference slice);
- evaluation set = the real held-out headline test portion minus anything the snapshot holds
  (the demo replays REAL test data into the API): reported beside the gate, never judged.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.base import EvaluationSet, TrainingSet

__all__ = [
    "evaluation_set",
    "field_mask",
    "field_set",
    "reference_set",
    "training_set",
]


def field_mask(domain: str, table: pa.Table) -> np.ndarray:
    """The snapshot rows of the field slice (the same rows for every step of one run)."""
    return np.asarray(get_domain(domain).field_holdout(table), dtype=bool)


def training_set(settings: Settings, domain: str, table: pa.Table) -> TrainingSet:
    held = field_mask(domain, table)
    training = get_domain(domain).training_set(settings, table.filter(pa.array(~held)))
    training.facts["field_rows_held_out"] = int(held.sum())
    return training


def field_set(settings: Settings, domain: str, table: pa.Table) -> EvaluationSet | None:
    held = field_mask(domain, table)
    if not held.any():
        return None
    return get_domain(domain).field_set(settings, table.filter(pa.array(held)))


def reference_set(settings: Settings, domain: str) -> EvaluationSet:
    return get_domain(domain).reference_set(settings)


def evaluation_set(settings: Settings, domain: str, table: pa.Table) -> EvaluationSet:
    return get_domain(domain).evaluation_set(settings, table)
