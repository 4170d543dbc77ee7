"""Training and evaluation of a `VibrationBundle` on time-split windows.

The anomaly detector sees NORMAL windows only. Its threshold comes from normal windows it has not
seen: the training portion of every normal recording is split again in time (first part: fit,
last part: calibration), so the calibration windows neither overlap nor precede the fit windows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from machine_health.config import Settings
from machine_health.domains.vibration.bundle import VibrationBundle, mahalanobis
from machine_health.domains.vibration.data import NORMAL, WindowSet
from machine_health.domains.vibration.features import FeatureConfig, extract_features
from machine_health.errors import ModelError

logger = logging.getLogger(__name__)

#: share of each normal recording's training portion kept back to set the threshold.
CALIBRATION_FRACTION = 0.3
#: few, strong boosting rounds: each round is one tree per class to walk at prediction time,
#: so 30 rounds keep one-window classification under 1 ms (the accuracy is the same as 100).
CLASSIFIER_ROUNDS = 30


@dataclass(frozen=True)
class VibrationFit:
    """A trained bundle and what its training measured (all of it, with the caller's `extra`,
    is also in `bundle.info`, saved with the bundle)."""

    bundle: VibrationBundle
    train_seconds: float
    n_train_windows: int
    #: normal windows the detector was fitted on, and those that set its threshold
    n_detector_fit: int
    n_calibration: int
    #: non-overlapping windows the (overlapping) calibration windows are worth
    n_calibration_independent: int
    #: training windows per class
    train_counts: dict[str, int]


def split_fit_calibration(windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the normal windows used to fit the detector and to calibrate its threshold.

    Per recording: windows ending before the cut are `fit`, windows starting after it are
    `calibration`; the windows that straddle the cut are used by neither.
    """
    length = windows.windows.shape[1]
    fit = np.zeros(len(windows), dtype=bool)
    calibration = np.zeros(len(windows), dtype=bool)
    normal = windows.labels == NORMAL
    for source in np.unique(windows.sources[normal]):
        rows = normal & (windows.sources == source)
        first, end = windows.starts[rows].min(), windows.starts[rows].max() + length
        cut = first + (end - first) * (1 - CALIBRATION_FRACTION)
        fit |= rows & (windows.starts + length <= cut)
        calibration |= rows & (windows.starts >= cut)
    return fit, calibration


def conformal_threshold(calibration_scores: np.ndarray, target_fpr: float) -> float:
    """The ceil((n+1)(1-fpr))-th smallest calibration score (the max when n < 1/fpr - 1).

    With exchangeable normal windows this bounds the expected false-alarm rate by `target_fpr`.
    """
    ordered = np.sort(calibration_scores)
    rank = min(math.ceil((len(ordered) + 1) * (1 - target_fpr)), len(ordered))
    return float(ordered[rank - 1])


def train_bundle(
    settings: Settings,
    windows: WindowSet,
    *,
    seed: int,
    extra: dict[str, Any] | None = None,
    features: np.ndarray | None = None,
) -> VibrationFit:
    """Fit the detector (normal windows only) and the fault classifier on training windows.

    `features`: the windows' `extract_features` rows when already computed (the pipeline's
    rescale step computed them for the same windows and configuration), else computed here.
    """
    started = time.perf_counter()
    fit, calibration = split_fit_calibration(windows)
    if fit.sum() < 10 or calibration.sum() < 10:
        raise ModelError(
            f"too few normal windows to train the detector ({fit.sum()} fit, "
            f"{calibration.sum()} calibration): add normal recordings or lower the hop"
        )
    speeds = windows.rpm[np.isfinite(windows.rpm)]
    config = FeatureConfig(
        sample_rate=windows.sample_rate,
        window=windows.windows.shape[1],
        nominal_rpm=float(np.median(speeds)) if speeds.size else FeatureConfig.nominal_rpm,
    )
    if features is None:
        features = extract_features(windows.windows, windows.rpm, config)
    elif features.shape[0] != len(windows):
        raise ModelError(f"{features.shape[0]} feature rows for {len(windows)} windows")

    scaler = StandardScaler().fit(features[fit])
    detector = LedoitWolf().fit(scaler.transform(features[fit]))
    calibration_scores = mahalanobis(detector, scaler.transform(features[calibration]))
    threshold = conformal_threshold(calibration_scores, settings.target_fpr)

    # Trees do not need scaling; the classifier sees the same normal-relative z-scores as the
    # detector so that one fitted scaler serves both models.
    classifier = HistGradientBoostingClassifier(
        max_iter=CLASSIFIER_ROUNDS,
        learning_rate=0.2,
        max_leaf_nodes=15,
        # "auto" would hold out a RANDOM 10 % of windows above 10k rows: overlapping
        # neighbours leak into it, and a fixed number of rounds is enough here.
        early_stopping=False,
        class_weight="balanced",
        random_state=seed,
    ).fit(scaler.transform(features), windows.labels)

    # Smoke inputs: one normal and one fault window (the first of each), kept from training.
    classes, counts = np.unique(windows.labels, return_counts=True)
    smoke_rows = [int(np.flatnonzero(windows.labels == NORMAL)[0])]
    if windows.is_fault.any():
        smoke_rows.append(int(np.flatnonzero(windows.is_fault)[0]))
    info = {
        "seed": seed,
        "n_train_windows": len(windows),
        "n_detector_fit": int(fit.sum()),
        "n_calibration": int(calibration.sum()),
        # Overlapping windows are correlated: this many non-overlapping ones hold the information.
        "n_calibration_independent": int(
            calibration.sum() * _hop(windows) // windows.windows.shape[1]
        ),
        "train_counts": {str(k): int(v) for k, v in zip(classes, counts, strict=True)},
        "train_seconds": 0.0,
        **(extra or {}),
    }
    bundle = VibrationBundle(
        config=config,
        labels=[str(c) for c in classifier.classes_],
        scaler=scaler,
        detector=detector,
        threshold=threshold,
        target_fpr=settings.target_fpr,
        classifier=classifier,
        smoke_windows=np.asarray(windows.windows[smoke_rows], dtype=np.float64),
        smoke_rpm=np.nan_to_num(windows.rpm[smoke_rows], nan=config.nominal_rpm),
        info=info,
    )
    info["train_seconds"] = time.perf_counter() - started
    logger.info(
        "trained vibration bundle on %d windows in %.1fs (threshold %.3f from %d calibration "
        "windows)",
        len(windows),
        info["train_seconds"],
        threshold,
        calibration.sum(),
    )
    return VibrationFit(
        bundle=bundle,
        train_seconds=info["train_seconds"],
        n_train_windows=info["n_train_windows"],
        n_detector_fit=info["n_detector_fit"],
        n_calibration=info["n_calibration"],
        n_calibration_independent=info["n_calibration_independent"],
        train_counts=info["train_counts"],
    )


def _hop(windows: WindowSet) -> int:
    """The hop between consecutive windows of one recording (the window length if unknown)."""
    for source in np.unique(windows.sources):
        starts = np.sort(windows.starts[windows.sources == source])
        if len(starts) > 1:
            return int(starts[1] - starts[0])
    return windows.windows.shape[1]


def evaluate_bundle(bundle: VibrationBundle, windows: WindowSet) -> dict[str, Any]:
    """Classifier and anomaly metrics on labelled windows at the bundle's rate and length.

    `{"classifier": {accuracy, macro_f1, confusion, labels},
      "anomaly": {auroc, recall_at_fpr, target_fpr, observed_fpr}}`; a metric that the data
    cannot define (no normal or no fault window) is None.
    """
    if len(windows) == 0:
        raise ModelError("no windows to evaluate")
    scores, proba = bundle.score_windows(windows.windows, windows.rpm)
    predicted = np.asarray(bundle.labels)[proba.argmax(axis=1)]
    labels = sorted(set(bundle.labels) | set(windows.labels.tolist()))
    flagged = scores > bundle.threshold
    fault = windows.is_fault
    both = fault.any() and (~fault).any()
    return {
        "classifier": {
            "accuracy": float(accuracy_score(windows.labels, predicted)),
            "macro_f1": float(
                f1_score(windows.labels, predicted, labels=labels, average="macro", zero_division=0)
            ),
            "confusion": confusion_matrix(windows.labels, predicted, labels=labels).tolist(),
            "labels": labels,
        },
        "anomaly": {
            "auroc": float(roc_auc_score(fault, scores)) if both else None,
            "recall_at_fpr": float(flagged[fault].mean()) if fault.any() else None,
            "target_fpr": float(bundle.target_fpr),
            "observed_fpr": float(flagged[~fault].mean()) if (~fault).any() else None,
        },
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of `evaluate_bundle` as one flat dict (for MLflow and the gate)."""
    flat = {}
    for section in ("classifier", "anomaly"):
        for key, value in metrics.get(section, {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[key] = float(value)
    for key in ("train_seconds", "predict_ms_per_window"):
        if isinstance(metrics.get(key), int | float):
            flat[key] = float(metrics[key])
    return flat
