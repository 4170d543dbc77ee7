"""Boosted trees scored through treelite give scikit-learn's own numbers, on real FD001 features."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from machine_health.config import Settings
from machine_health.domains import trees
from machine_health.domains.turbofan.data import load_subset, rul_targets
from machine_health.domains.turbofan.features import fit_transform, rolling_features


@pytest.fixture(scope="module")
def features(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rolling features of every FD001 training window and its capped RUL."""
    train = load_subset(data_dir, "FD001").train
    settings = Settings(_env_file=None, data_dir=data_dir)
    transform = fit_transform(train, window=30, cap=settings.rul_cap)
    windows = transform.windows(train, every_cycle=True)
    return rolling_features(windows), rul_targets(train, transform.cap)


def test_regressor_equals_scikit_learn(features: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = features
    model = HistGradientBoostingRegressor(max_iter=120, random_state=0).fit(x[::3], y[::3])
    # a serving batch (one thread) and a large one (the thread pool)
    for rows in (x[:7], x[: trees.SMALL_BATCH * 20]):
        got = trees.predict(model, rows)
        assert got.shape == (len(rows),)
        np.testing.assert_allclose(got, model.predict(rows), rtol=0, atol=1e-9)
    assert np.std(trees.predict(model, x[:500])) > 1  # not a constant


@pytest.mark.parametrize("classes", [2, 4])
def test_classifier_probabilities_equal_scikit_learn(
    features: tuple[np.ndarray, np.ndarray], classes: int
) -> None:
    x, y = features
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x[::3], labels[::3])
    rows = x[1::97]
    got = trees.predict_proba(model, rows)
    assert got.shape == (len(rows), classes)
    np.testing.assert_allclose(got, model.predict_proba(rows), rtol=0, atol=1e-6)
    assert (got.argmax(axis=1) == model.predict(rows)).all()


def test_compiled_copy_lives_and_dies_with_the_estimator(
    features: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = features
    model = HistGradientBoostingRegressor(max_iter=5).fit(x[:2000], y[:2000])
    trees.predict(model, x[:3])
    assert model in trees._compiled
    before = len(trees._compiled)
    del model
    gc.collect()
    assert len(trees._compiled) == before - 1
