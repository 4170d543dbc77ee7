"""Detectors of abnormal machine sounds, fitted on clip statistics of NORMAL clips only.

Two kinds, both plain arrays (saved as .npz, nothing executable in the model file):

- `mahalanobis`: standardise with the normal training statistics, then the distance to the
  Ledoit-Wolf shrunk Gaussian of normal clips. With ~50 training clips the shrinkage is what
  makes the covariance invertible and stable.
- `knn`: mean Euclidean distance of the standardised clip to its `k` nearest normal training
  clips. Makes no Gaussian assumption, which helps when normal operation has several modes
  (the valve's open / close patterns, two recording domains).

Which one, and on which statistics, was chosen on the validation clips with
`python -m research.acoustic_selection` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.covariance import LedoitWolf

from machine_health.errors import ModelError

DetectorKind = Literal["mahalanobis", "knn"]
KINDS: tuple[DetectorKind, ...] = ("mahalanobis", "knn")


@dataclass
class Detector:
    """A fitted detector: standardisation + either a Gaussian or the normal training points."""

    kind: DetectorKind
    mean: np.ndarray
    scale: np.ndarray
    #: mahalanobis: location and precision of the shrunk Gaussian (standardised space)
    location: np.ndarray = field(default_factory=lambda: np.zeros(0))
    precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: knn: the standardised normal training clips, and k
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    k: int = 0

    def score(self, features: np.ndarray) -> np.ndarray:
        """Anomaly score per row (higher = further from normal operation)."""
        z = (np.atleast_2d(features) - self.mean) / self.scale
        if self.kind == "mahalanobis":
            centred = z - self.location
            squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
            return np.sqrt(np.maximum(squared, 0.0))
        distances = np.sqrt(((z[:, None, :] - self.points[None]) ** 2).sum(axis=-1))
        return np.sort(distances, axis=1)[:, : self.k].mean(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for `np.savez` (loaded back with allow_pickle=False)."""
        return {
            "kind": np.asarray(KINDS.index(self.kind)),
            "mean": self.mean,
            "scale": self.scale,
            "location": self.location,
            "precision": self.precision,
            "points": self.points,
            "k": np.asarray(self.k),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Detector:
        kind = KINDS[int(arrays["kind"])]
        detector = cls(
            kind=kind,
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            scale=np.asarray(arrays["scale"], dtype=np.float64),
            location=np.asarray(arrays["location"], dtype=np.float64),
            precision=np.asarray(arrays["precision"], dtype=np.float64),
            points=np.asarray(arrays["points"], dtype=np.float64),
            k=int(arrays["k"]),
        )
        detector.check()
        return detector

    def check(self) -> None:
        """ModelError when the arrays do not make a usable detector (a corrupt file)."""
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        ok = d > 0 and self.scale.shape == (d,) and np.all(self.scale > 0)
        if self.kind == "mahalanobis":
            ok = ok and self.location.shape == (d,) and self.precision.shape == (d, d)
        else:
            ok = ok and self.points.ndim == 2 and self.points.shape[1] == d
            ok = ok and 1 <= self.k <= len(self.points)
        arrays = (self.mean, self.scale, self.location, self.precision, self.points)
        if not ok or not all(np.all(np.isfinite(a)) for a in arrays):
            raise ModelError(f"inconsistent {self.kind} detector arrays")


def fit_detector(normal: np.ndarray, kind: DetectorKind = "mahalanobis", k: int = 3) -> Detector:
    """Fit a detector on clip statistics `(n, d)` of NORMAL clips."""
    normal = np.asarray(normal, dtype=np.float64)
    if normal.ndim != 2 or len(normal) < 5:
        raise ModelError(f"need at least 5 normal clips to fit a detector, got {normal.shape}")
    mean = normal.mean(axis=0)
    # A floor on the scale: a constant statistic (a silent band) must not divide by zero.
    scale = np.maximum(normal.std(axis=0), 1e-6)
    z = (normal - mean) / scale
    if kind == "mahalanobis":
        gaussian = LedoitWolf().fit(z)
        return Detector(kind, mean, scale, gaussian.location_, gaussian.precision_)
    if kind == "knn":
        if not 1 <= k < len(z):
            raise ModelError(f"k={k} needs 1 <= k < {len(z)} training clips")
        return Detector(kind, mean, scale, points=z, k=k)
    raise ModelError(f"unknown detector kind {kind!r}; known: {', '.join(KINDS)}")
