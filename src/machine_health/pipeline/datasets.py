"""The data of a retraining run, built by its domain (`Domain.training_set`, `evaluation_set`).

- training set = the base real training data (`Settings.data_dir`) + the archived labelled rows
  of the run's snapshot, converted to what the domain's `train` takes;
- evaluation set = the real held-out test portion, frozen (the same for champion and
  challenger), minus anything the snapshot holds: the demo replays REAL test data into the API,
  so archived field data can be test data, and a model must never be scored on what it trained
  on. Excluded units/windows are counted in the gate report.
"""

from __future__ import annotations

import pyarrow as pa

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.base import EvaluationSet, TrainingSet

__all__ = ["EvaluationSet", "TrainingSet", "evaluation_set", "training_set"]


def training_set(settings: Settings, domain: str, table: pa.Table) -> TrainingSet:
    return get_domain(domain).training_set(settings, table)


def evaluation_set(settings: Settings, domain: str, table: pa.Table) -> EvaluationSet:
    return get_domain(domain).evaluation_set(settings, table)
