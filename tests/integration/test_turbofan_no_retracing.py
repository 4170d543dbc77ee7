"""Serving a turbofan bundle's Keras members traces each one once, whatever the batch sizes.

`predict_on_batch` used to trace again when the batch size changed (1 unit, then a batch),
for every member and every loaded bundle, and TensorFlow logged "N out of the last N calls ...
triggered tf.function retracing" (issue #27; `models.keras_call`). Real Keras models, untrained
(the weights do not matter here), saved and loaded as the API loads a bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from machine_health.domains.base import load_bundle
from machine_health.domains.turbofan import TurbofanBundle
from machine_health.domains.turbofan.features import FeatureTransform, rolling_features
from machine_health.domains.turbofan.models import Fitted, build_keras

WINDOW, N_FEATURES, SCALES = 30, 14, [10]
NAMES = ("mlp", "mlp", "mlp", "cnn")  # the served ensemble's MLPs, and the test fixtures' CNN


class _Traces(logging.Handler):
    """The TensorFlow logger's retracing warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "retracing" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[str], _Traces]]:
    """(functions traced by a call, the retracing warnings) from here on.

    TensorFlow's frequent-tracing detector (private API) is global and warns at most a few times
    per function: a fresh one makes the warning independent of the tests run before, and counts
    every tf.function call that traced.
    """
    from tensorflow.python.eager.polymorphic_function import polymorphic_function as pf

    traced: list[str] = []

    class Counting(pf._FrequentTracingDetectorManager):
        __slots__ = ()

        def called_with_tracing(self, key, function, omit_warning):  # type: ignore[no-untyped-def]
            traced.append(getattr(function, "__qualname__", repr(function)))
            super().called_with_tracing(key, function, omit_warning)

    monkeypatch.setattr(pf, "_frequent_tracing_detector_manager", Counting())
    handler = _Traces()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        yield traced, handler
    finally:
        tf_logger.removeHandler(handler)


def _bundle(path: Path) -> Path:
    rng = np.random.default_rng(0)
    fit_windows = rng.normal(size=(64, WINDOW, N_FEATURES))
    features = rolling_features(fit_windows, SCALES)
    members = []
    for i, name in enumerate(NAMES):
        shape = features.shape[1:] if name == "mlp" else fit_windows.shape[1:]
        model = build_keras(name, shape, 1e-3, features=features, width=32 + 16 * i)
        params = {"scales": SCALES} if name == "mlp" else {}
        members.append(Fitted(name, "keras", model, history={}, params=params))
    transform = FeatureTransform(
        window=WINDOW, cap=125.0, settings_mean=[0.0] * 3, settings_std=[1.0] * 3,
        regime_centers=[[0.0] * 3], sensors=[f"sensor_{i + 1}" for i in range(N_FEATURES)],
        dropped=[], regime_mean=[[0.0] * N_FEATURES], regime_std=[[1.0] * N_FEATURES],
    )  # fmt: skip
    bundle = TurbofanBundle(transform, members, model_name="test", weights=[1, 2, 3, 4])
    return bundle.save(path / "bundle")


def _plain(bundle: TurbofanBundle, windows: np.ndarray) -> np.ndarray:
    """The bundle's answer from each member's plain `model(x)` (eager)."""
    each = []
    for member in bundle.members:
        x = rolling_features(windows, SCALES) if member.name == "mlp" else windows
        each.append(np.asarray(member.estimator(x, training=False), "float64").reshape(-1))
    scaled = np.average(each, axis=0, weights=bundle.weights)
    return np.clip(scaled * bundle.cap, 0.0, None)


def test_any_batch_size_scores_without_retracing(tmp_path: Path, tracing) -> None:
    traced, warnings = tracing
    saved = _bundle(tmp_path)
    # Two loads: a reload serves new members (their own traces) next to the old ones.
    bundles = [load_bundle(saved), load_bundle(saved)]
    sizes = list(range(1, 41)) * 2
    np.random.default_rng(1).shuffle(sizes)
    windows = np.random.default_rng(2).normal(size=(40, WINDOW, N_FEATURES))
    answers = []
    for n in sizes:
        for bundle in bundles:
            answers.append((bundle, n, bundle.predict_windows(windows[:n])))
    assert warnings.messages == []
    # At most one trace per member (its first call), none per new batch size.
    assert len(traced) <= len(NAMES) * len(bundles), traced
    for bundle, n, got in answers[:: len(bundles) * 3] + answers[-4:]:
        assert isinstance(bundle, TurbofanBundle) and got.shape == (n,)
        np.testing.assert_allclose(got, _plain(bundle, windows[:n]), rtol=1e-5, atol=1e-4)
