"""The gate judges a challenger against the lineage's baseline version too (a real registry,
the session's trained vibration model, the real reference slice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from machine_health.domains import get_domain
from machine_health.domains.vibration.bundle import VibrationBundle
from machine_health.pipeline.evaluate import _baseline_rows
from tests.support.models import TrainedModels, load_trained, register_version
from tests.support.settings import make_settings

DOMAIN = "vibration"


class Confused(VibrationBundle):
    """The real model, whose class probabilities are rolled to the next class on a third of the
    windows: a challenger that got worse."""

    def __init__(self, inner: VibrationBundle) -> None:
        self.__dict__.update(inner.__dict__)

    def score_windows(self, windows, rpm):  # type: ignore[no-untyped-def]
        scores, proba = super().score_windows(windows, rpm)
        moved = np.random.default_rng(0).random(len(proba)) < 1 / 3
        proba = proba.copy()
        proba[moved] = np.roll(proba[moved], 1, axis=1)
        return scores, proba


def test_a_challenger_is_judged_against_the_baseline_once_the_champion_is_later(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> None:
    settings = make_settings(tmp_path, store_uri)
    bundle = load_trained(settings, trained_models, DOMAIN)
    assert register_version(settings, bundle, "v1", DOMAIN, aliases=("champion",)) == "1"
    reference = get_domain(DOMAIN).reference_set(settings)
    worse = Confused(bundle)

    baseline, rows = _baseline_rows(settings, DOMAIN, reference, worse, "1")
    assert baseline == "1" and rows == []  # the champion IS the baseline: judged once

    assert register_version(settings, bundle, "v2", DOMAIN, aliases=("champion",)) == "2"
    baseline, rows = _baseline_rows(settings, DOMAIN, reference, worse, "2")
    assert baseline == "1"
    assert {r["slice"] for r in rows} == {"baseline"} and len(rows) == 2
    failed = [r for r in rows if not r["passed"]]
    assert failed and all(r["verdict"].startswith("worse than the baseline") for r in failed)
    assert all(r["interval"] is not None and r["n_groups"] > 4 for r in rows)

    _, same = _baseline_rows(settings, DOMAIN, reference, bundle, "2")
    assert all(r["passed"] and r["difference"] == 0 for r in same)
