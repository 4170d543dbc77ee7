"""Acoustic explanations on the real DCASE valve clips: the evidence is the detector's own score
split over its features (exactly for the Mahalanobis detector, as an upper bound for the k-NN
one), the top band is the one an independent computation finds, the answer is compact and
leaves `predict` alone.

The bundles are trained here as training does (`train` + `validation` parts, ~1 s); the clips
explained are of the `test` part (5 per domain, label and part: 20 clips).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from machine_health.domains.acoustic import AcousticBundle, train_bundle, training_set
from machine_health.domains.acoustic.data import ANOMALY, ClipSet, load_clips
from machine_health.domains.acoustic.explain import band_ranges
from machine_health.domains.acoustic.features import clip_stats, stat_names
from machine_health.domains.base import EXPLANATION_KEYS


@pytest.fixture(scope="module")
def prepared(data_dir: Path):
    return training_set(data_dir)


@pytest.fixture(scope="module")
def bundle(prepared) -> AcousticBundle:
    return train_bundle(prepared, seed=0)[0]


@pytest.fixture(scope="module")
def test_clips(data_dir: Path) -> ClipSet:
    return load_clips(data_dir, parts=("test",), limit_per_group=5)


@pytest.fixture(scope="module")
def items(test_clips: ClipSet) -> list[dict]:
    return [{"samples": w, "sample_rate": test_clips.sample_rate} for w in test_clips.waves]


def test_the_terms_sum_to_the_squared_score(bundle, items) -> None:
    assert bundle.detector.kind == "mahalanobis"
    outputs = bundle.predict(items)
    for output, explanation in zip(outputs, bundle.explain(items, outputs), strict=True):
        assert explanation["decomposition"] == "exact"
        squared = output["anomaly_score"] ** 2
        assert explanation["total"] == pytest.approx(squared, rel=1e-3)
        parts = sum(e["value"] for e in explanation["evidence"]) + explanation["rest"]
        assert parts == pytest.approx(squared, rel=2e-3, abs=2e-3)
        values = [e["value"] for e in explanation["evidence"]]
        assert values == sorted(values, reverse=True)
        assert sum(e["share"] for e in explanation["evidence"]) == pytest.approx(
            sum(values) / explanation["total"], rel=2e-3
        )


def direct_terms(bundle: AcousticBundle, features: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Each feature's term from the detector's public score alone: score^2 is a quadratic form
    in c = z - location, so score^2 = sum_i c_i d(score^2)/dc_i / 2 (Euler), and a central
    difference of a quadratic is its exact derivative."""
    detector = bundle.detector
    c = (features - detector.mean) / detector.scale - detector.location
    terms = np.empty(len(features))
    for i in range(len(features)):
        shift = np.zeros_like(features)
        shift[i] = step * detector.scale[i]
        up, down = (detector.score((features + s)[None])[0] ** 2 for s in (shift, -shift))
        terms[i] = c[i] * (up - down) / (2 * step) / 2
    return terms


def test_an_anomalous_clips_top_band_is_what_a_direct_computation_finds(
    bundle, items, test_clips
) -> None:
    outputs = bundle.predict(items)
    flagged = [i for i, (clip, out) in enumerate(zip(test_clips.clips, outputs, strict=True))
               if clip.label == ANOMALY and out["is_anomaly"]]  # fmt: skip
    assert len(flagged) >= 3  # the valve is hard: some anomalies pass under the threshold
    explanations = bundle.explain([items[i] for i in flagged], [outputs[i] for i in flagged])
    names = stat_names(bundle.config)
    ranges = band_ranges(bundle.config)
    spectra, _ = bundle.spectrograms([items[i] for i in flagged])
    for spectrum, explanation in zip(spectra, explanations, strict=True):
        features = clip_stats(spectrum[None], bundle.config)[0]
        terms = direct_terms(bundle, features)
        assert terms.sum() == pytest.approx(explanation["total"], rel=1e-3)
        top = int(np.argmax(terms))
        assert explanation["evidence"][0]["name"] == names[top]
        assert explanation["evidence"][0]["value"] == pytest.approx(terms[top], rel=1e-3)
        lo, hi = ranges[top % bundle.config.stat_bands]
        assert explanation["evidence"][0]["hz"] == pytest.approx([lo, hi], rel=1e-3)
        assert explanation["summary"].startswith("anomaly (score ")
        assert f"{lo / 1000:.2g}-{hi / 1000:.2g} kHz" in explanation["summary"]


def test_knn_terms_bound_the_squared_score(prepared, items) -> None:
    knn = train_bundle(prepared, seed=0, kind="knn", k=3)[0]
    outputs = knn.predict(items)
    spectra, _ = knn.spectrograms(items)
    for spectrum, output, explanation in zip(
        spectra, outputs, knn.explain(items, outputs), strict=True
    ):
        assert explanation["decomposition"] == "upper_bound"
        assert explanation["total"] >= output["anomaly_score"] ** 2 * (1 - 1e-3)
        # = the mean squared distance to the 3 nearest normal training clips
        z = (clip_stats(spectrum[None], knn.config)[0] - knn.detector.mean) / knn.detector.scale
        squared = ((knn.detector.points - z) ** 2).sum(axis=1)
        assert explanation["total"] == pytest.approx(np.sort(squared)[:3].mean(), rel=1e-3)


def test_band_ranges_tile_the_spectrum_from_0_hz_to_nyquist(bundle) -> None:
    ranges = band_ranges(bundle.config)
    assert len(ranges) == bundle.config.stat_bands
    assert ranges[0][0] == 0.0 and ranges[-1][1] == pytest.approx(8000.0)
    for (lo, hi), (next_lo, next_hi) in itertools.pairwise(ranges):
        assert lo < next_lo < hi < next_hi  # ascending, overlapping by one filter slope


def test_explanations_are_compact_deterministic_and_leave_predict_alone(bundle, items) -> None:
    chosen = items[::4] + bundle.smoke_inputs()  # samples and base64 WAV items
    before = bundle.predict(chosen)
    first = bundle.explain(chosen, before)
    assert bundle.predict(chosen) == before
    assert bundle.explain(chosen, before) == first
    assert bundle.explain(chosen[1:2], before[1:2]) == first[1:2]
    for explanation in first:
        assert set(EXPLANATION_KEYS) <= set(explanation)
        assert len(json.dumps(explanation, allow_nan=False).encode()) < 1500
        assert len(explanation["evidence"]) == 3
        for row in explanation["evidence"]:
            assert float(f"{row['value']:.4g}") == row["value"]
