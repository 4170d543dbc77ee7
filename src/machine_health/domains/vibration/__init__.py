"""Motor vibration / acoustic domain: waveform windows -> anomaly score + bearing fault class.

Public API (what the API and the pipeline call):

- `DOMAIN` (`VibrationDomain`): schemas, primary metrics, `example_input(data_dir)`.
- `load_manifest(dir)`, `resolve_manifest_dir(path)`, `make_windows(...)`, `time_split(...)`:
  labelled recordings and the per-recording time split.
- `extract_features(windows, rpm, config)`, `feature_names(config)`, `FeatureConfig`.
- `train_bundle(settings, windows, *, seed)` -> `(VibrationBundle, info)`,
  `evaluate_bundle(bundle, windows)` -> metrics in the benchmark JSON shape, `flat_metrics`.
- `workflow`: `benchmark`, `train_and_register`, `evaluate_model` (the CLI commands).
"""

from __future__ import annotations

from machine_health.domains.vibration.bundle import VibrationBundle
from machine_health.domains.vibration.data import (
    NORMAL,
    Recording,
    WindowSet,
    frame,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
    time_split,
)
from machine_health.domains.vibration.domain import (
    DOMAIN,
    VibrationDomain,
    VibrationInput,
    VibrationOutput,
)
from machine_health.domains.vibration.features import (
    FeatureConfig,
    extract_features,
    feature_names,
)
from machine_health.domains.vibration.physics import SKF_6205, BearingGeometry
from machine_health.domains.vibration.training import (
    evaluate_bundle,
    flat_metrics,
    train_bundle,
)

__all__ = [
    "DOMAIN",
    "NORMAL",
    "SKF_6205",
    "BearingGeometry",
    "FeatureConfig",
    "Recording",
    "VibrationBundle",
    "VibrationDomain",
    "VibrationInput",
    "VibrationOutput",
    "WindowSet",
    "evaluate_bundle",
    "extract_features",
    "feature_names",
    "flat_metrics",
    "frame",
    "load_manifest",
    "make_windows",
    "resolve_manifest_dir",
    "time_split",
    "train_bundle",
]
