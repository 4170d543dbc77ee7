"""Why an acoustic answer is what it is: which frequency bands of the clip's statistics deviate
from the normal operation the detector learned, as parts of the detector's own score.

Both detectors (`model.Detector`) score the standardised clip statistics z, and both scores
decompose over the features, so the explanation is the model's own arithmetic, not a surrogate:

- `mahalanobis`: score^2 = c' P c with c = z - location and P the shrunk precision matrix, i.e.
  the sum over features i of c_i (P c)_i. Each term is feature i's deviation weighted by the
  precision row, i.e. by what the normal correlations make of it; the terms sum EXACTLY to
  score^2. A term may be negative (a deviation that a correlated one makes expected), so the
  top terms may sum to more than score^2, never the whole set.
- `knn`: score = mean Euclidean distance to the k nearest normal training clips; the terms are
  the per-feature mean squared differences to those k clips, and they sum to the mean squared
  distance, which BOUNDS score^2 from above (the mean of distances is at most the root mean
  square of them); equal when the k distances are equal.

Each feature is one statistic (`config.stats`, e.g. the standard deviation over time of the
level) of one group of adjacent mel bands; `hz` is the range its mel filters cover, from the
lower edge of its first filter to the upper edge of its last (neighbouring groups overlap by one
filter slope). `evidence`: the 3 largest terms, with their share of the total and the clip's z;
`rest`: the sum of the other terms; `total`: the sum of all (= score^2 for `mahalanobis`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from machine_health.domains.acoustic.features import FeatureConfig, clip_stats, stat_names
from machine_health.domains.acoustic.model import Detector

if TYPE_CHECKING:
    from machine_health.domains.acoustic.bundle import AcousticBundle

#: features in `evidence` (largest term first)
TOP = 3
DECOMPOSITION = {"mahalanobis": "exact", "knn": "upper_bound"}
METHODS = {
    "mahalanobis": "mahalanobis terms: score^2 = sum_i c_i (P c)_i (exact)",
    "knn": "knn terms: mean squared distance to the k nearest normals, >= score^2",
}


def sig(value: float, digits: int = 4) -> float | None:
    """`value` rounded to `digits` significant digits (None when not finite: JSON has no NaN)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def score_terms(detector: Detector, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per clip and feature `(n, d)`: the detector's score terms (module docstring) and the
    standardised statistics z."""
    z = (np.atleast_2d(features) - detector.mean) / detector.scale
    if detector.kind == "mahalanobis":
        centred = z - detector.location
        return centred * (centred @ detector.precision), z
    squared = (z[:, None, :] - detector.points[None]) ** 2  # (n, points, d)
    nearest = np.argsort(np.sqrt(squared.sum(axis=-1)), axis=1, kind="stable")[:, : detector.k]
    return np.take_along_axis(squared, nearest[:, :, None], axis=1).mean(axis=1), z


def band_ranges(config: FeatureConfig) -> list[tuple[float, float]]:
    """Per group of `stat_bands` mel bands: the Hz range its triangular filters cover (the
    edges of `features.mel_filterbank`: equally spaced in HTK mel from 0 to Nyquist)."""
    top_mel = 2595.0 * math.log10(1.0 + config.sample_rate / 2.0 / 700.0)
    mels = np.linspace(0.0, top_mel, config.n_mels + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    width = config.n_mels // config.stat_bands
    return [
        (float(edges[g * width]), float(edges[(g + 1) * width + 1]))
        for g in range(config.stat_bands)
    ]


def _khz(hz: float) -> str:
    return f"{hz / 1000:.2g}"


def explain(
    bundle: AcousticBundle, inputs: Sequence[Any], outputs: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One explanation per clip of `inputs` (scored by `bundle.predict` into `outputs`)."""
    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
    if len(inputs) == 0:
        return []
    config, detector = bundle.config, bundle.detector
    spectra, _ = bundle.spectrograms(inputs)
    features = np.concatenate([clip_stats(s[None], config) for s in spectra])
    terms, z = score_terms(detector, features)
    names = stat_names(config)
    ranges = band_ranges(config)
    explanations = []
    for row, output in zip(range(len(inputs)), outputs, strict=True):
        total = float(terms[row].sum())
        top = np.argsort(-terms[row], kind="stable")[:TOP]
        evidence = []
        for j in top:
            lo, hi = ranges[j % config.stat_bands]
            evidence.append(
                {
                    "name": names[j],
                    "value": sig(terms[row, j]),
                    "share": sig(terms[row, j] / total) if total > 0 else None,
                    "z": sig(z[row, j]),
                    "hz": [sig(lo), sig(hi)],
                }
            )
        first = evidence[0]
        lo, hi = first["hz"]
        stat = names[top[0]].split("_band")[0]
        verdict = "anomaly" if output.get("is_anomaly") else "normal"
        comparison = ">" if output.get("is_anomaly") else "<="
        share = "" if first["share"] is None else f" gives {first['share']:.0%} of score^2"
        summary = (
            f"{verdict} (score {output['anomaly_score']:.3g} {comparison} "
            f"{output['threshold']:.3g}): {stat} of {_khz(lo)}-{_khz(hi)} kHz{share} "
            f"(z {first['z']:+.2g}); then "
            + ", ".join(f"{_khz(e['hz'][0])}-{_khz(e['hz'][1])} kHz" for e in evidence[1:])
        )
        explanations.append(
            {
                "method": METHODS[detector.kind],
                "summary": summary,
                "evidence": evidence,
                "rest": sig(total - float(terms[row, top].sum())),
                "total": sig(total),
                "decomposition": DECOMPOSITION[detector.kind],
            }
        )
    return explanations
