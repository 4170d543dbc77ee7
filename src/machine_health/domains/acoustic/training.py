"""Training and evaluation of an `AcousticBundle` on the fixed clip split (data.py).

The detector sees the NORMAL `train` clips only. The alarm threshold is the conformal quantile
of the scores of the NORMAL `validation` clips (never fitted), so that about `target_fpr` of
normal clips raise an alarm. Metrics follow the challenge: AUC per domain (source, target) and
the pAUC over false-positive rates 0-0.1 as `sklearn.metrics.roc_auc_score(max_fpr=0.1)` gives
it (McClish-standardised: 0.5 = chance, 1 = perfect; the challenge's evaluator calls the same
function), per domain and over both domains pooled (the challenge's per-section pAUC); the
official score is the harmonic mean of AUC source, AUC target and the pooled pAUC.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from machine_health.domains.acoustic.bundle import AcousticBundle
from machine_health.domains.acoustic.data import DOMAINS, NORMAL, ClipSet
from machine_health.domains.acoustic.features import FeatureConfig, clip_stats, log_mel
from machine_health.domains.acoustic.model import DetectorKind, fit_detector
from machine_health.errors import ModelError

#: 10 % of normal clips may raise an alarm: the finest rate 20 validation normals resolve
#: (a 1 % target would need ~100 held-out normal clips).
TARGET_FPR = 0.1
MAX_FPR = 0.1
SMOKE_CLIPS = 2


@dataclass(frozen=True)
class Prepared:
    """Clips with their log-mel spectrograms computed once (training, benchmarks, tests)."""

    clips: ClipSet
    spectra: np.ndarray

    def part(self, part: str, label: str | None = None) -> np.ndarray:
        """Mask of the clips of one split part (and label)."""
        mask = self.clips.parts == part
        if label is not None:
            mask &= np.asarray([c.label == label for c in self.clips.clips])
        return mask


def prepare(clips: ClipSet, config: FeatureConfig | None = None, batch: int = 20) -> Prepared:
    """Spectrograms of every clip, computed in batches (bounded memory)."""
    config = config or FeatureConfig()
    if clips.sample_rate != config.sample_rate:
        raise ModelError(f"clips at {clips.sample_rate} Hz, features at {config.sample_rate} Hz")
    spectra = [log_mel(clips.waves[i : i + batch], config) for i in range(0, len(clips), batch)]
    return Prepared(clips, np.concatenate(spectra))


@dataclass(frozen=True)
class AcousticTrainingResult:
    """What a training run produced, besides the bundle."""

    seed: int
    kind: str
    config: dict[str, Any]
    n_train: int
    n_calibration: int
    threshold: float
    target_fpr: float
    #: share of validation normals above the threshold (<= target_fpr by construction)
    calibration_fpr: float
    #: validation metrics (the clips that chose the model: optimistic, see BENCHMARKS.md)
    validation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def conformal_threshold(calibration_scores: np.ndarray, target_fpr: float) -> float:
    """The ceil((n+1)(1-fpr))-th smallest calibration score (the max when n < 1/fpr - 1):
    with exchangeable normal clips the expected false-alarm rate is at most `target_fpr`."""
    ordered = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    rank = min(math.ceil((len(ordered) + 1) * (1 - target_fpr)), len(ordered))
    return float(ordered[rank - 1])


def evaluate_scores(
    scores: np.ndarray, y: np.ndarray, domains: np.ndarray, max_fpr: float = MAX_FPR
) -> dict[str, float]:
    """AUC and pAUC per domain, pooled pAUC, and the official score (their harmonic mean)."""
    metrics: dict[str, float] = {}
    for domain in DOMAINS:
        rows = domains == domain
        if len(np.unique(y[rows])) == 2:
            metrics[f"auc_{domain}"] = float(roc_auc_score(y[rows], scores[rows]))
            metrics[f"pauc_{domain}"] = float(roc_auc_score(y[rows], scores[rows], max_fpr=max_fpr))
    if len(np.unique(y)) == 2:
        metrics["pauc"] = float(roc_auc_score(y, scores, max_fpr=max_fpr))
    parts = [metrics.get("auc_source"), metrics.get("auc_target"), metrics.get("pauc")]
    if all(p is not None and p > 0 for p in parts):
        metrics["official_score"] = float(len(parts) / sum(1.0 / p for p in parts))  # type: ignore[operator]
    return metrics


def clip_features(prepared: Prepared, config: FeatureConfig) -> np.ndarray:
    """The detector's input (clip statistics) of every prepared clip."""
    return clip_stats(prepared.spectra, config)


def fit_rows(
    prepared: Prepared, config: FeatureConfig, extra_normal: np.ndarray | None = None
) -> np.ndarray:
    """The clip statistics the detector is fitted on: the NORMAL `train` clips, then
    `extra_normal` (statistics of more normal clips, e.g. archived clips an operator labelled
    normal). One function for `train_bundle` and the retraining's rescale step, so both fit
    the very same standardisation."""
    train = clip_features(prepared, config)[prepared.part("train", NORMAL)]
    if extra_normal is None or len(extra_normal) == 0:
        return train
    return np.concatenate([train, np.asarray(extra_normal, dtype=np.float64)])


def train_bundle(
    prepared: Prepared,
    *,
    seed: int,
    config: FeatureConfig | None = None,
    kind: DetectorKind = "mahalanobis",
    k: int = 3,
    target_fpr: float = TARGET_FPR,
    extra_normal: np.ndarray | None = None,
) -> tuple[AcousticBundle, AcousticTrainingResult]:
    """Fit on the normal `train` clips, set the threshold on the normal `validation` clips.

    The detector is deterministic; `seed` picks the smoke clips kept in the bundle (and is
    recorded so a run can be repeated). `extra_normal`: clip statistics (with `config`) of
    more normal clips fitted with the `train` clips (`fit_rows`); never used for the threshold.
    """
    started = time.perf_counter()
    config = config or FeatureConfig()
    features = clip_features(prepared, config)
    train = prepared.part("train", NORMAL)
    calibration = prepared.part("validation", NORMAL)
    if train.sum() < 10 or calibration.sum() < 5:
        raise ModelError(
            f"need >= 10 normal train and >= 5 normal validation clips, "
            f"got {int(train.sum())} and {int(calibration.sum())}"
        )
    fitted = fit_rows(prepared, config, extra_normal)
    detector = fit_detector(fitted, kind, k)
    calibration_scores = detector.score(features[calibration])
    threshold = conformal_threshold(calibration_scores, target_fpr)
    rng = np.random.default_rng(seed)
    smoke_rows = rng.choice(np.flatnonzero(train), size=min(SMOKE_CLIPS, int(train.sum())))
    smoke = np.round(prepared.clips.waves[smoke_rows] * 32768.0).clip(-32768, 32767)
    validation = prepared.part("validation")
    metrics = evaluate_scores(
        detector.score(features[validation]),
        prepared.clips.y[validation],
        prepared.clips.domains[validation],
    )
    result = AcousticTrainingResult(
        seed=seed,
        kind=kind,
        config=config.as_dict(),
        n_train=len(fitted),
        n_calibration=int(calibration.sum()),
        threshold=threshold,
        target_fpr=target_fpr,
        calibration_fpr=float(np.mean(calibration_scores > threshold)),
        validation=metrics,
        seconds=time.perf_counter() - started,
    )
    info = {"seed": seed, "n_train": result.n_train, "n_calibration": result.n_calibration,
            "n_extra_normal": len(fitted) - int(train.sum())}  # fmt: skip
    bundle = AcousticBundle(
        config=config,
        detector=detector,
        threshold=threshold,
        target_fpr=target_fpr,
        smoke_clips=smoke.astype(np.int16),
        info=info,
    )
    return bundle, result


def evaluate_bundle(bundle: AcousticBundle, prepared: Prepared, part: str = "test") -> dict:
    """Challenge metrics of a bundle on one split part, plus the alarm rates at its threshold."""
    rows = prepared.part(part)
    scores = bundle.score_spectrograms(list(prepared.spectra[rows]))
    y, domains = prepared.clips.y[rows], prepared.clips.domains[rows]
    metrics = evaluate_scores(scores, y, domains)
    alarms = scores > bundle.threshold
    metrics["false_alarm_rate"] = float(alarms[y == 0].mean()) if (y == 0).any() else math.nan
    metrics["recall_at_threshold"] = float(alarms[y == 1].mean()) if (y == 1).any() else math.nan
    metrics["n_clips"] = int(rows.sum())
    return metrics
