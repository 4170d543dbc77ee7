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

from machine_health.domains.lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
