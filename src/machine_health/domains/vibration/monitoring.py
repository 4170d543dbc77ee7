"""Vibration drift features and live performance (called through `VibrationDomain`).

- drift (and projection) features: the domain's own window features (`features.extract_features`:
  time statistics, energy and share of each spectral band, spectral shape, envelope lines),
  computed with the feature configuration stored in the reference, so a window of any sample
  rate is compared in the same physical units as training; each window is a draw (no groups);
- live performance: feedback gives the inspected class. Fault detection (is_anomaly vs
  label != normal) gives precision and recall; the fault class gives accuracy and macro-F1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from machine_health.archive.records import decode_samples
from machine_health.domains.base import labelled_by_version
from machine_health.domains.vibration.data import (
    NORMAL,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
)
from machine_health.domains.vibration.features import FeatureConfig, extract_features, feature_names
from machine_health.domains.vibration.physics import resample
from machine_health.monitoring.reference import Reference, build_reference

DOMAIN = "vibration"


def feature_config(meta: Mapping[str, Any]) -> FeatureConfig:
    """The `FeatureConfig` a reference was computed with (default when absent)."""
    stored = meta.get("feature_config")
    return FeatureConfig.from_dict(stored) if stored else FeatureConfig()


def features(windows: np.ndarray, rpm: np.ndarray | None, config: FeatureConfig) -> pd.DataFrame:
    """The domain's features of windows sampled at `config.sample_rate`."""
    values = extract_features(windows, rpm, config)
    return pd.DataFrame(values, columns=feature_names(config))


def features_from_records(
    records: Iterable[Mapping[str, Any]], config: FeatureConfig
) -> pd.DataFrame:
    """Features of archived windows, resampled to the reference's sample rate.

    A long window is cut into model-length chunks, as the vibration bundle scores it; windows
    of one length are featurised together (one batch call per length).
    """
    by_length: dict[int, tuple[list[np.ndarray], list[float]]] = {}
    for record in records:
        body = record["input"]
        samples = resample(
            decode_samples(body["samples"]), float(body["sample_rate"]), config.sample_rate
        )
        count = len(samples) // config.window
        chunks = samples[: count * config.window].reshape(count, -1) if count else [samples]
        rpm = body.get("rpm")
        for chunk in chunks:
            windows, speeds = by_length.setdefault(len(chunk), ([], []))
            windows.append(chunk)
            speeds.append(np.nan if rpm is None else float(rpm))
    frames = [
        features(np.stack(windows), np.asarray(speeds), config)
        for windows, speeds in by_length.values()
    ]
    if not frames:
        return pd.DataFrame(columns=feature_names(config), dtype=float)
    return pd.concat(frames, ignore_index=True)


def projection_features(records: Sequence[Mapping[str, Any]], bundle: Any) -> pd.DataFrame:
    """One row per record: the mean of its windows' features (with the served configuration)."""
    config = getattr(bundle, "config", None) or FeatureConfig()
    rows = [features_from_records([record], config).mean(axis=0) for record in records]
    return pd.DataFrame(rows).reset_index(drop=True)


def drift_reference(
    windows: np.ndarray, rpm: np.ndarray | None, config: FeatureConfig, **meta: Any
) -> Reference:
    """Reference of a vibration model trained on `windows` (at `config.sample_rate`)."""
    values = features(windows, rpm, config)
    return build_reference(DOMAIN, values, meta={"feature_config": config.as_dict(), **meta})


def training_reference(data_dir: Path, config: FeatureConfig, **meta: Any) -> Reference:
    """Reference of a vibration model trained on the train portion of a manifest directory.

    Built from NON-overlapping windows whatever hop training used: overlapping windows repeat
    the same samples and would overstate the reference's sample size in the KS test.
    """
    recordings = load_manifest(resolve_manifest_dir(data_dir))
    train = make_windows(
        recordings, portion="train", window=config.window, hop=config.window,
        sample_rate=config.sample_rate,
    )  # fmt: skip
    return drift_reference(train.windows, train.rpm, config, data_dir=str(data_dir), **meta)


def live_performance(
    records: Sequence[Mapping[str, Any]], *, min_predictions: int
) -> dict[str, dict[str, Any]]:
    """Per model version: fault detection precision/recall, class accuracy and macro-F1."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    by_version = labelled_by_version(records, "is_anomaly")
    result = {}
    for version, rows in by_version.items():
        truth = [str(r["label"]) for r in rows]
        predicted = [str(r["output"].get("fault_class", "")) for r in rows]
        is_fault = np.array([t != NORMAL for t in truth])
        alarm = np.array([bool(r["output"]["is_anomaly"]) for r in rows])
        enough = len(rows) >= min_predictions
        result[version] = {
            "status": "ok" if enough else "insufficient_labels",
            "n_predictions": len(rows),
            "n_faults": int(is_fault.sum()),
            "precision": float(precision_score(is_fault, alarm, zero_division=0)),
            "recall": float(recall_score(is_fault, alarm, zero_division=0)),
            "false_alarm_rate": float(alarm[~is_fault].mean()) if (~is_fault).any() else 0.0,
            "class_accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        }
    return result
