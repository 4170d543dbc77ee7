"""Turbofan domain: remaining useful life from NASA C-MAPSS engine cycles.

Modules: `domain` (the `Domain`, request schemas and their physical ranges), `data` (loading,
targets, unit split, cycle order), `features` (regimes, flat sensors, scaling, windows), `models`
(scikit-learn and Keras builders), `bundle` (the model artifact), `metrics` (RMSE, PHM08
score...), `training` (train and evaluate a bundle), `plots`, `workflow` (benchmark, train and
register: the CLI's commands), `retrain` (the pipeline steps' part), `monitoring` (drift and live
performance), `demo` (the demo's traffic), `commands` and `ui` (light: the CLI and the UI).

This file stays light (the CLI and the UI import the package for `commands` and `ui`): the
names below are imported from their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DOMAIN": "domain",
    "INT64_MAX": "domain",
    "JsonInteger": "domain",
    "RulPrediction": "domain",
    "SENSOR_RANGES": "domain",
    "SETTING_RANGES": "domain",
    "TurbofanCycle": "domain",
    "TurbofanDomain": "domain",
    "max_cycle": "domain",
    "TurbofanBundle": "bundle",
    "COLUMNS": "data",
    "check_next_cycle": "data",
    "load_subset": "data",
    "rul_targets": "data",
    "split_units": "data",
    "phm08_score": "metrics",
    "rul_metrics": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
