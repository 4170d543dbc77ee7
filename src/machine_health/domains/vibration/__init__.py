"""Motor vibration / acoustic domain: waveform windows -> anomaly score + bearing fault class.

Modules: `domain` (the `Domain` and its request schemas), `data` (manifests, recordings, the
per-recording time split, windows), `physics` (resampling, filters, bearing defect
frequencies), `features`, `bundle` (the model artifact), `training` (train and evaluate a
bundle), `plots`, `workflow` (benchmark, train-and-register, evaluate: the CLI's commands),
`retrain` (the pipeline steps' part), `monitoring` (drift and live performance), `demo` (the
demo's traffic), `commands` and `ui` (light: the CLI and the UI).

This file stays light (the CLI and the UI import the package for `commands` and `ui`): the
names below are imported from their module on first use.
"""

from __future__ import annotations

from machine_health.domains.lazy import lazy_exports

_EXPORTS = {
    "DOMAIN": "domain",
    "VibrationDomain": "domain",
    "VibrationInput": "domain",
    "VibrationOutput": "domain",
    "NORMAL": "data",
    "Recording": "data",
    "WindowSet": "data",
    "frame": "data",
    "load_manifest": "data",
    "make_windows": "data",
    "resolve_manifest_dir": "data",
    "time_split": "data",
    "FeatureConfig": "features",
    "extract_features": "features",
    "feature_names": "features",
    "SKF_6205": "physics",
    "BearingGeometry": "physics",
    "VibrationBundle": "bundle",
    "VibrationFit": "training",
    "evaluate_bundle": "training",
    "flat_metrics": "training",
    "train_bundle": "training",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
