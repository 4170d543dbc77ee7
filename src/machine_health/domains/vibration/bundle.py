"""`VibrationBundle`: feature settings + anomaly detector + fault classifier, saved as one folder.

Serving path for a batch: resample every waveform to the model's rate, cut it into model-length
chunks, compute the features of ALL chunks at once, call the detector and the classifier once
each, and average chunk scores/probabilities back per request item.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import skops.io
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.preprocessing import StandardScaler

from machine_health.domains import trees
from machine_health.domains.base import ModelBundle
from machine_health.domains.skops_types import load_skops
from machine_health.domains.vibration.features import FeatureConfig, extract_features
from machine_health.domains.vibration.physics import resample
from machine_health.errors import InputError

logger = logging.getLogger(__name__)

_MODELS_FILE = "models.skops"
_CONFIG_FILE = "vibration.json"
_SMOKE_FILE = "smoke.npz"


def mahalanobis(detector: LedoitWolf, standardised: np.ndarray) -> np.ndarray:
    """Mahalanobis distance (not squared) of each row to the normal distribution.

    The fitted precision matrix applied directly: `LedoitWolf.mahalanobis` gives the same
    squared values but its input validation costs more than the product for one window.
    """
    centred = standardised - detector.location_
    squared = np.einsum("ij,jk,ik->i", centred, detector.precision_, centred)
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class ChunkBatch:
    """A request batch as the models see it: chunks of at most one model window each."""

    #: the chunks at the model's rate (a short item is one shorter chunk)
    chunks: list[np.ndarray]
    #: per chunk: the index of the request item it was cut from
    owner: np.ndarray
    #: per chunk: the item's rpm (NaN: not given; the features then use the nominal rpm)
    rpm: np.ndarray
    #: per chunk: `extract_features` row
    features: np.ndarray


@dataclass
class VibrationBundle(ModelBundle):
    """Everything needed to score a waveform window, fitted together."""

    domain: ClassVar[str] = "vibration"

    config: FeatureConfig
    labels: list[str]
    #: standardises features with the statistics of NORMAL training windows (z-scores relative
    #: to normal operation); both models work on these z-scores.
    scaler: StandardScaler
    #: shrunk covariance of normal features; anomaly score = Mahalanobis distance.
    detector: LedoitWolf
    threshold: float
    target_fpr: float
    #: fault classifier (normal / inner_race / outer_race / ball) on the same z-scores.
    classifier: HistGradientBoostingClassifier
    smoke_windows: np.ndarray
    smoke_rpm: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    # --- scoring ------------------------------------------------------------------------------
    def score_windows(
        self, windows: np.ndarray, rpm: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores `(n,)` and class probabilities `(n, labels)` of windows at model rate."""
        features = extract_features(windows, rpm, self.config)
        return self.score_features(features)

    def score_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One detector call and one classifier call for a whole batch of feature rows."""
        # The fitted scaler's parameters applied directly: `transform`'s input checks cost more
        # than the arithmetic when serving one window.
        z = (features - self.scaler.mean_) / self.scaler.scale_
        scores = mahalanobis(self.detector, z)
        return scores, trees.predict_proba(self.classifier, z)

    def _chunks(self, item: Any) -> tuple[list[np.ndarray], float]:
        get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
        samples = np.asarray(get("samples"), dtype=np.float64).ravel()
        rate = float(get("sample_rate") or self.config.sample_rate)
        rpm = get("rpm")
        if samples.size == 0 or not np.all(np.isfinite(samples)):
            raise InputError("samples must be a non-empty list of finite numbers")
        at_rate = resample(samples, rate, self.config.sample_rate)
        window = self.config.window
        # Shorter than a quarter window (~one outer-race defect period) says nothing on bearings.
        if len(at_rate) < window // 4:
            seconds = window / 4 / self.config.sample_rate
            raise InputError(
                f"waveform too short: {len(samples) / rate * 1000:.1f} ms, "
                f"needs at least {seconds * 1000:.1f} ms"
            )
        if len(at_rate) < window:
            return [at_rate], np.nan if rpm is None else float(rpm)
        count = len(at_rate) // window
        chunks = list(at_rate[: count * window].reshape(count, window))
        return chunks, np.nan if rpm is None else float(rpm)

    def chunk_features(self, inputs: Sequence[Any]) -> ChunkBatch:
        """Every item cut into model-length chunks at the model's rate, with the features of all
        chunks (one `extract_features` call per chunk length, normally one): what `predict`
        scores and `explain` re-reads, so both see the very same chunks."""
        chunks: list[np.ndarray] = []
        owners: list[int] = []
        speeds: list[float] = []
        for index, item in enumerate(inputs):
            item_chunks, rpm = self._chunks(item)
            chunks += item_chunks
            owners += [index] * len(item_chunks)
            speeds += [rpm] * len(item_chunks)
        owner = np.asarray(owners)
        rpm = np.asarray(speeds)
        lengths = np.asarray([len(c) for c in chunks])
        # Features per chunk length (normally one group), then ONE call per model.
        features = np.empty((len(chunks), 0))
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            block = extract_features(np.stack([chunks[i] for i in rows]), rpm[rows], self.config)
            if features.shape[1] == 0:
                features = np.empty((len(chunks), block.shape[1]))
            features[rows] = block
        return ChunkBatch(chunks=chunks, owner=owner, rpm=rpm, features=features)

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Score a batch of `{samples, sample_rate, rpm}` items (dicts or the input model)."""
        if len(inputs) == 0:
            return []
        batch = self.chunk_features(inputs)
        owner = batch.owner
        scores, proba = self.score_features(batch.features)
        results = []
        for index in range(len(inputs)):
            rows = owner == index
            score = float(scores[rows].mean())
            probs = proba[rows].mean(axis=0)
            results.append(
                {
                    "anomaly_score": score,
                    "is_anomaly": bool(score > self.threshold),
                    "threshold": float(self.threshold),
                    "fault_class": self.labels[int(np.argmax(probs))],
                    "probabilities": {
                        label: float(p) for label, p in zip(self.labels, probs, strict=True)
                    },
                }
            )
        return results

    def explain(
        self, inputs: Sequence[Any], outputs: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Defect-line prominences and the features that moved the class, per item (see
        `vibration.explain`: imported here, the serving path never pays for it)."""
        from machine_health.domains.vibration.explain import explain

        return explain(self, inputs, outputs)

    def smoke_inputs(self) -> list[dict[str, Any]]:
        return [
            {"samples": w.tolist(), "sample_rate": self.config.sample_rate, "rpm": float(r)}
            for w, r in zip(self.smoke_windows, self.smoke_rpm, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ledoit-wolf mahalanobis detector + hist-gradient-boosting classifier",
            "labels": self.labels,
            "sample_rate": self.config.sample_rate,
            "window": self.config.window,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "n_features": int(self.scaler.n_features_in_),
            **{k: v for k, v in self.info.items() if isinstance(v, int | float | str)},
        }

    # --- persistence --------------------------------------------------------------------------
    def save_files(self, path: Path) -> None:
        models = {
            "scaler": self.scaler,
            "detector": self.detector,
            "classifier": self.classifier,
        }
        skops.io.dump(models, path / _MODELS_FILE)
        np.savez(path / _SMOKE_FILE, windows=self.smoke_windows, rpm=self.smoke_rpm)
        meta = {
            "config": self.config.as_dict(),
            "labels": self.labels,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "info": self.info,
        }
        (path / _CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load_files(cls, path: Path) -> VibrationBundle:
        models = load_skops(path / _MODELS_FILE)  # only the allow-listed types
        meta = json.loads((path / _CONFIG_FILE).read_text())
        with np.load(path / _SMOKE_FILE) as smoke:
            windows, rpm = smoke["windows"], smoke["rpm"]
        return cls(
            config=FeatureConfig.from_dict(meta["config"]),
            labels=list(meta["labels"]),
            scaler=models["scaler"],
            detector=models["detector"],
            threshold=float(meta["threshold"]),
            target_fpr=float(meta["target_fpr"]),
            classifier=models["classifier"],
            smoke_windows=windows,
            smoke_rpm=rpm,
            info=dict(meta.get("info", {})),
        )
