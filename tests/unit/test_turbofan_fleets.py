"""Turbofan across fleets, on the real C-MAPSS files: fleet weights (every fleet the same total
weight) and novelty (a unit outside what the model was trained on is flagged in its answer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from machine_health.config import Settings
from machine_health.domains.base import load_bundle
from machine_health.domains.turbofan.data import SETTINGS, Subset, load_subset
from machine_health.domains.turbofan.domain import RulPrediction
from machine_health.domains.turbofan.features import (
    VALUE_COLUMNS,
    FeatureTransform,
    fit_transform,
    rolling_features,
)
from machine_health.domains.turbofan.models import FitConfig, bin_codes, predict_member
from machine_health.domains.turbofan.reference import fit_units
from machine_health.domains.turbofan.training import (
    MAX_UPWEIGHT,
    fleet_facts,
    fleet_weights,
    merge_extra,
    train_bundle,
)

#: the transform the served models fit (FitConfig's defaults, the settings' window)
PRODUCT = {"window": 100, "cap": 125, "use_cycle": True, "smoothing": 0.15, "max_levels": 2}


@pytest.fixture(scope="module")
def fd001(data_dir: Path) -> Subset:
    return load_subset(data_dir, "FD001")


@pytest.fixture(scope="module")
def fd002(data_dir: Path) -> Subset:
    return load_subset(data_dir, "FD002")


def _histories(frame: pd.DataFrame) -> list[np.ndarray]:
    return [g[VALUE_COLUMNS].to_numpy(dtype="float64") for _, g in frame.groupby("unit")]


def _sea_level(frame: pd.DataFrame) -> np.ndarray:
    """Rows at FD001's only operating point (altitude ~0, Mach ~0, full throttle)."""
    return ((frame["setting_1"].abs() < 1) & (frame["setting_3"] == 100)).to_numpy()


@pytest.fixture(scope="module")
def fd001_transform(fd001: Subset) -> FeatureTransform:
    """The transform of a model trained on FD001 (fitted once: k-means takes seconds)."""
    return fit_transform(fit_units(fd001.train), **PRODUCT)


def _novel(transform: FeatureTransform, frame: pd.DataFrame) -> np.ndarray:
    _, _, found = transform.scored_windows(_histories(frame))
    assert found is not None
    return np.array([f["novel"] for f in found])


# --- fleet weights ---------------------------------------------------------------------------
def test_every_fleet_carries_the_same_total_weight(fd001: Subset, fd002: Subset) -> None:
    base = fit_units(fd001.train)
    big = fd002.train[fd002.train["unit"] <= 200]  # 200 archived units vs 80 base ones
    frame = merge_extra(base, big)
    weights = fleet_weights(frame)
    assert weights is not None and len(weights) == len(frame)
    fleets = frame["fleet"].to_numpy()
    totals = {f: weights[fleets == f].sum() for f in ("base", "archive")}
    assert totals["base"] == pytest.approx(totals["archive"], rel=1e-9)
    assert weights.mean() == pytest.approx(1.0)  # the unweighted loss's scale
    # inside a fleet every row weighs the same; the big fleet's rows weigh less
    assert np.ptp(weights[fleets == "base"]) == 0 and np.ptp(weights[fleets == "archive"]) == 0
    assert weights[fleets == "base"][0] > 1 > weights[fleets == "archive"][0]
    facts = fleet_facts(frame)
    assert facts is not None
    assert {f: facts[f]["units"] for f in facts} == {"base": 80, "archive": 200}
    assert {f: facts[f]["rows"] for f in facts} == {"base": len(base), "archive": len(big)}
    assert facts["base"]["share"] == pytest.approx(0.5) == facts["archive"]["share"]


def test_a_handful_of_archived_units_is_upweighted_within_the_bound(
    fd001: Subset, fd002: Subset
) -> None:
    base = fit_units(fd001.train)
    few = fd002.train[fd002.train["unit"] <= 3]
    frame = merge_extra(base, few)
    facts = fleet_facts(frame)
    assert facts is not None
    ratio = facts["archive"]["row_weight"] / facts["base"]["row_weight"]
    # equal totals would need base_rows / archive_rows (about 27); the cap keeps it bounded
    assert len(base) / len(few) > 20
    uncapped_base = len(frame) / (2 * len(base))
    assert ratio == pytest.approx(MAX_UPWEIGHT / uncapped_base, rel=1e-4)
    assert 0 < facts["archive"]["share"] < 0.5


def test_an_extra_fleet_column_splits_the_archive(fd001: Subset, fd002: Subset) -> None:
    extra = fd002.train[fd002.train["unit"] <= 60]
    extra = extra.assign(fleet=np.where(extra["unit"] <= 20, "north", "south"))
    frame = merge_extra(fit_units(fd001.train), extra)
    facts = fleet_facts(frame)
    assert facts is not None and set(facts) == {"base", "north", "south"}
    assert all(f["share"] == pytest.approx(1 / 3) for f in facts.values())


def test_without_archived_units_nothing_is_weighted(fd001: Subset) -> None:
    base = fit_units(fd001.train)
    assert merge_extra(base, None) is base
    assert merge_extra(base, base.iloc[:0]) is base
    assert fleet_weights(base) is None and fleet_facts(base) is None
    # the weighted per-regime statistics with equal weights are the plain ones
    base = base[base["unit"] <= 25]  # (a smaller k-means search)
    plain = fit_transform(base, **PRODUCT)
    equal = fit_transform(base, **PRODUCT, sample_weight=np.ones(len(base)))
    np.testing.assert_allclose(equal.regime_mean, plain.regime_mean, rtol=1e-9)
    np.testing.assert_allclose(equal.regime_std, plain.regime_std, rtol=1e-9)


def test_fleet_weights_balance_the_shared_regime_statistics(fd001: Subset, fd002: Subset) -> None:
    # FD002's sea-level regime is FD001's operating point: its per-regime mean is a mix of both
    # fleets, weighted by fleet (half each), not by rows (FD002 holds more rows there).
    frame = merge_extra(fit_units(fd001.train), fd002.train)
    weighted = fit_transform(frame, **PRODUCT, sample_weight=fleet_weights(frame))
    plain = fit_transform(frame, **PRODUCT)
    assert weighted.n_regimes == plain.n_regimes == 6
    assert weighted.regime_mean != plain.regime_mean


# --- novelty ---------------------------------------------------------------------------------
def test_fd001_transform_flags_fd002_regimes_not_fd001_test_units(
    fd001_transform: FeatureTransform, fd001: Subset, fd002: Subset
) -> None:
    transform = fd001_transform
    assert transform.novelty is not None
    fd001_rate = _novel(transform, fd001.test).mean()
    assert fd001_rate < 0.05  # measured: 0 of 100
    novel = _novel(transform, fd002.test)
    last = fd002.test.groupby("unit").tail(1)
    unknown = ~_sea_level(last)  # scored cycle in a regime FD001 never had
    assert unknown.sum() > 200 and novel[unknown].mean() > 0.8  # measured: all
    # FD002 histories kept to FD001's operating point are known ground: not flagged
    sea = fd002.train[_sea_level(fd002.train)]
    assert _novel(transform, sea).mean() < 0.05  # measured: 0 of 260


def test_a_sensor_outside_its_training_range_is_flagged(
    fd001_transform: FeatureTransform, fd001: Subset
) -> None:
    transform = fd001_transform
    unit = fd001.test[fd001.test["unit"] == 1].copy()
    _, _, (before,) = transform.scored_windows(_histories(unit))  # type: ignore[misc]
    assert not before["novel"] and before["reasons"] == [] and 0 <= before["score"] <= 1
    unit.loc[unit.index[-3:], "sensor_11"] += 5.0  # a stuck-high Ps30 on the last 3 cycles
    _, _, (after,) = transform.scored_windows(_histories(unit))  # type: ignore[misc]
    assert after["novel"] and after["score"] > 1
    assert after["reasons"] == [f"sensor_11 outside the training range at 3 of {len(unit)} cycles"]
    # settings beyond every known regime: 10 kft up on the last cycle
    unit = fd001.test[fd001.test["unit"] == 1].copy()
    unit.loc[unit.index[-1], SETTINGS[0]] = 10.0
    _, _, (moved,) = transform.scored_windows(_histories(unit))  # type: ignore[misc]
    assert moved["novel"]
    assert moved["reasons"][0].startswith("operating settings outside every known regime at 1 of")


def test_a_transform_saved_without_novelty_thresholds_still_scores(
    fd001_transform: FeatureTransform, fd001: Subset
) -> None:
    transform = fd001_transform
    old = {k: v for k, v in json.loads(json.dumps(transform.to_dict())).items() if k != "novelty"}
    loaded = FeatureTransform.from_dict(old)
    assert loaded.novelty is None
    histories = _histories(fd001.test[fd001.test["unit"] <= 3])
    windows, regimes, found = loaded.scored_windows(histories)
    assert found is None
    expected, expected_regimes = transform.last_windows(histories)
    np.testing.assert_array_equal(windows, expected)
    np.testing.assert_array_equal(regimes, expected_regimes)


# --- trained bundles (hgb, small) ------------------------------------------------------------
@pytest.fixture(scope="module")
def small_settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, turbofan_window=30)


@pytest.mark.slow
def test_the_served_answer_carries_novelty_and_old_bundles_answer_without(
    small_settings: Settings, fd001: Subset, fd002: Subset, tmp_path: Path
) -> None:
    config = FitConfig(hgb_max_iter=20, refit_all=False)
    fit = train_bundle(small_settings, fit_units(fd001.train), model_name="hgb", config=config)
    bundle = fit.bundle
    assert fit.fleets is None and "fleets" not in bundle.facts  # one fleet: nothing weighted
    fd001_units = [g for _, g in fd001.test.groupby("unit")]
    fd002_units = [g for _, g in fd002.test.groupby("unit")]
    answers = bundle.predict(fd001_units + fd002_units)
    for answer in answers:
        RulPrediction.model_validate(answer)  # the documented answer schema
    novel = np.array([a["novelty"]["novel"] for a in answers])
    assert novel[: len(fd001_units)].mean() < 0.05
    unknown = ~_sea_level(fd002.test.groupby("unit").tail(1))
    assert novel[len(fd001_units) :][unknown].mean() > 0.8
    # saved and loaded: the same answers
    loaded = load_bundle(bundle.save(tmp_path / "new"))
    assert loaded.predict(fd002_units[:3]) == bundle.predict(fd002_units[:3])
    # a bundle saved before novelty (no thresholds in transform.json) loads and answers without
    path = bundle.save(tmp_path / "old")
    transform = json.loads((path / "transform.json").read_text())
    del transform["novelty"]
    (path / "transform.json").write_text(json.dumps(transform))
    old = load_bundle(path)
    for answer, new in zip(old.predict(fd002_units[:3]), answers[100:103], strict=True):
        assert "novelty" not in answer and answer["rul"] == pytest.approx(new["rul"])
        assert RulPrediction.model_validate(answer).novelty is None


@pytest.mark.slow
def test_training_with_an_archived_fleet_records_its_weights(
    small_settings: Settings, fd001: Subset, fd002: Subset
) -> None:
    archived = fd002.train[fd002.train["unit"] <= 200]
    config = FitConfig(hgb_max_iter=20, refit_all=False, max_windows=20_000)
    fit = train_bundle(
        small_settings, fit_units(fd001.train), model_name="hgb", extra_df=archived,
        config=config,
    )  # fmt: skip
    assert fit.fleets is not None and fit.bundle.facts["fleets"] == fit.fleets
    assert {f: fit.fleets[f]["units"] for f in fit.fleets} == {"base": 80, "archive": 200}
    assert fit.fleets["base"]["share"] == pytest.approx(0.5, abs=1e-6)
    assert all(np.isfinite(f["val_rmse_last"]) for f in fit.fleets.values())
    # the model now knows FD002's regimes: its own training fleets are not novel
    assert fit.bundle.transform.n_regimes == 6
    held = fd002.test[fd002.test["unit"] <= 50]
    answers = fit.bundle.predict([g for _, g in held.groupby("unit")])
    assert np.mean([a["novelty"]["novel"] for a in answers]) < 0.05
    # the smoke histories stay plain C-MAPSS rows (no fleet column)
    assert all("fleet" not in row for history in fit.bundle.smoke for row in history)
    # fleet-weighted hgb is fitted on bin codes (scikit-learn's weighted binning is ~10x the
    # fit): the member carries its edges, and the bundle scores raw windows through them
    (member,) = [m for m in fit.bundle.members if m.name == "hgb"]
    edges = [np.asarray(e) for e in member.params["bin_edges"]]
    windows, _ = fit.bundle.transform.last_windows(_histories(held))
    coded = bin_codes(rolling_features(windows, tuple(member.params["scales"])), edges)
    assert all(len(e) <= 254 for e in edges) and coded.max() <= 254
    assert np.allclose(predict_member(member, windows), member.estimator.predict(coded))


def test_unweighted_hgb_is_fitted_on_the_raw_features(
    small_settings: Settings, fd001: Subset
) -> None:
    config = FitConfig(hgb_max_iter=20, refit_all=False, max_windows=5_000)
    fit = train_bundle(small_settings, fit_units(fd001.train), model_name="hgb", config=config)
    assert all("bin_edges" not in m.params for m in fit.bundle.members)
