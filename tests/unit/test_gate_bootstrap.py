"""The gate's decision on constructed per-item scores: paired bootstrap, reference and field."""

from __future__ import annotations

import numpy as np

from machine_health.domains.base import ItemScores
from machine_health.pipeline.bootstrap import judge
from machine_health.pipeline.evaluate import MIN_FIELD_GROUPS, judge_slice


def _rmse(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    error = columns["pred"] - columns["true"]
    return {"rmse": float(np.sqrt(np.mean(error**2))) if error.size else None}


def _scores(pred: np.ndarray, groups: np.ndarray) -> ItemScores:
    return ItemScores(
        groups=groups.astype(str),
        columns={"true": np.zeros(len(pred)), "pred": pred},
        metrics=_rmse,
        directions={"rmse": "min"},
    )


def _slice(n_groups: int, per_group: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    return rng.normal(0.0, 10.0, n_groups * per_group), groups


def test_a_challenger_better_on_the_field_and_equal_on_the_reference_passes() -> None:
    ref_pred, ref_groups = _slice(40)
    reference = judge_slice(
        "reference", _scores(ref_pred.copy(), ref_groups), _scores(ref_pred, ref_groups), 0.02
    )
    assert [r["passed"] for r in reference] == [True]
    assert reference[0]["verdict"].startswith("not worse beyond the tolerance")
    assert reference[0]["difference"] == 0.0 and reference[0]["interval"] == [0.0, 0.0]
    field_pred, field_groups = _slice(30, seed=2)
    field = judge_slice(
        "field", _scores(field_pred * 0.5, field_groups), _scores(field_pred, field_groups), 0.02
    )
    row = field[0]
    assert row["passed"] and row["verdict"].startswith("significantly better")
    assert row["challenger"] < row["champion"] and row["n_groups"] == 30
    low, high = row["interval"]
    assert low <= row["difference"] <= high < 0


def test_a_challenger_worse_on_the_reference_beyond_the_tolerance_fails() -> None:
    pred, groups = _slice(40)
    worse = judge_slice("reference", _scores(pred + 8.0, groups), _scores(pred, groups), 0.02)
    row = worse[0]
    assert not row["passed"] and row["verdict"].startswith("worse beyond the tolerance")
    assert row["interval"][0] > row["allowed_loss"] == 0.02 * row["champion"]
    # Worse by less than the tolerance, with a tight interval: passes.
    slightly = judge_slice("reference", _scores(pred * 1.005, groups), _scores(pred, groups), 0.02)
    assert slightly[0]["passed"]


def test_a_significantly_worse_field_slice_fails_without_any_tolerance() -> None:
    pred, groups = _slice(40, seed=3)
    rows = judge_slice("field", _scores(pred * 1.5, groups), _scores(pred, groups), 0.5)
    assert not rows[0]["passed"] and rows[0]["verdict"].startswith("significantly worse")


def test_a_tiny_slice_gives_a_wide_interval_and_says_so() -> None:
    rng = np.random.default_rng(4)
    groups = np.arange(3)
    champion = rng.normal(0.0, 10.0, 3)
    challenger = champion + rng.normal(0.3, 4.0, 3)  # a little worse, within three items' noise
    rows = judge_slice("reference", _scores(challenger, groups), _scores(champion, groups), 0.02)
    row = rows[0]
    low, high = row["interval"]
    assert high - low > 0.1 * row["champion"]  # wide: three groups cannot tell
    assert row["passed"] and row["verdict"].startswith("inconclusive")
    assert "3 groups" in row["verdict"]
    few = judge_slice("field", _scores(challenger, groups), _scores(champion, groups), 0.02)
    assert few[0]["passed"] and few[0]["verdict"].startswith("not enough field data")
    assert few[0]["n_groups"] == 3 < MIN_FIELD_GROUPS


def test_without_a_champion_the_challenger_passes_and_is_recorded() -> None:
    pred, groups = _slice(10)
    rows = judge_slice("reference", _scores(pred, groups), None, 0.02)
    assert rows[0]["passed"] and rows[0]["champion"] is None and rows[0]["challenger"] > 0


def test_the_bootstrap_is_paired_and_deterministic() -> None:
    pred, groups = _slice(20, seed=5)
    noisy = pred + np.random.default_rng(6).normal(0.0, 0.5, pred.size)
    first = judge_slice("reference", _scores(noisy, groups), _scores(pred, groups), 0.02)
    again = judge_slice("reference", _scores(noisy, groups), _scores(pred, groups), 0.02)
    assert first == again
    # Paired: the shared noise of the slice cancels, so the interval is far narrower than the
    # spread of either model's RMSE over resamples would be.
    low, high = first[0]["interval"]
    assert high - low < 0.05 * first[0]["champion"]


def test_a_significant_reference_loss_within_a_spanning_interval_passes_and_says_so() -> None:
    # The acoustic v2 of `make run`: accuracy 0.736 -> 0.710, 95 % bounds [-0.070, -0.004],
    # tolerance 2 % of 0.736 = 0.0147: worse with confidence, not shown beyond the tolerance.
    differences = np.linspace(-0.070 - 0.0733 / 18, -0.004 + 0.0733 / 18, 1001)
    row = judge("reference", "max", 0.736, 0.710, differences, 0.02, 12)
    low, high = row["interval"]
    assert abs(low + 0.070) < 1e-3 and abs(high + 0.004) < 1e-3
    assert -high < row["allowed_loss"] < -low  # the loss's interval spans the tolerance
    assert row["passed"] and row["verdict"].startswith("inconclusive, significantly worse")
    # The same loss, no longer significant: inconclusive for noise, as before.
    noisy = judge("reference", "max", 0.736, 0.710, differences + 0.01, 0.02, 12)
    assert noisy["passed"] and "too few groups or too noisy" in noisy["verdict"]


def test_losses_within_the_tolerance_cannot_accumulate_past_the_baseline() -> None:
    # Three promotions, each 1.5 % worse than its champion on the frozen reference slice: every
    # step is within the 2 % tolerance, but the third challenger is 4.6 % worse than the
    # lineage's baseline, and the baseline row refuses it.
    pred, groups = _slice(60, seed=8)
    baseline = np.abs(pred)
    versions = [baseline * 1.015**k for k in range(4)]
    step = judge_slice(
        "reference", _scores(versions[3], groups), _scores(versions[2], groups), 0.02
    )
    assert step[0]["passed"]
    total = judge_slice(
        "baseline", _scores(versions[3], groups), _scores(versions[0], groups), 0.02
    )
    assert not total[0]["passed"] and total[0]["slice"] == "baseline"
    assert total[0]["verdict"].startswith("worse than the baseline beyond the tolerance")
    assert total[0]["allowed_loss"] == 0.02 * total[0]["champion"]
