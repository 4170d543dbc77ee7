"""Turbofan training and the model bundle, on the real FD001 files (trains small Keras models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from machine_health.config import Settings
from machine_health.domains.base import load_bundle
from machine_health.domains.turbofan import TurbofanBundle
from machine_health.domains.turbofan.data import load_subset
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.training import (
    TurbofanFit,
    evaluate_bundle,
    predict_test,
    train_bundle,
)
from machine_health.errors import InputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fd001(data_dir: Path):
    return load_subset(data_dir, "FD001")


@pytest.fixture(scope="module")
def trained(data_dir: Path, fd001) -> TurbofanFit:
    settings = Settings(_env_file=None, data_dir=data_dir)
    # Quick: 5 epochs, no refit on all units (test RMSE about 15.5; the full protocol's CNN
    # scores about 13.3, docs/BENCHMARKS.md).
    return train_bundle(
        settings, fd001.train, model_name="cnn", seed=0,
        config=FitConfig(epochs=5, patience=2, refit_all=False),
    )  # fmt: skip


def test_quick_cnn_beats_constant_predictor(trained, fd001) -> None:
    fit = trained
    bundle = fit.bundle
    metrics = evaluate_bundle(bundle, fd001.test, fd001.rul)
    constant = float(np.sqrt(np.mean((fd001.rul - fd001.rul.mean()) ** 2)))
    assert constant > 35  # what a model must beat (about 40 in the literature)
    assert metrics["rmse"] < 25
    assert metrics["phm_score"] > 0
    val, fitted = set(fit.val_units), set(fit.train_unit_ids)
    assert len(val) == 20 and not val & fitted and val | fitted == set(fd001.train["unit"])
    assert fit.epochs["cnn"] >= 2
    assert len(fit.history["cnn"]["val_loss"]) == fit.epochs["cnn"]


def test_predict_histories_matches_test_scoring(trained, fd001) -> None:
    bundle = trained.bundle
    units, expected = predict_test(bundle, fd001.test)
    histories = [fd001.test[fd001.test["unit"] == u] for u in units[:5]]
    as_records = [h.to_dict(orient="records") for h in histories]
    out_frames = bundle.predict(histories)
    out_records = bundle.predict(as_records)
    np.testing.assert_allclose([o["rul"] for o in out_frames], expected[:5], rtol=1e-5)
    np.testing.assert_allclose([o["rul"] for o in out_records], expected[:5], rtol=1e-5)
    assert [o["cycles_in_window"] for o in out_frames] == [
        min(len(h), bundle.window) for h in histories
    ]
    last_rows = fd001.test[fd001.test["unit"].isin(units[:5])].groupby("unit").tail(1)
    assert [o["regime"] for o in out_records] == bundle.transform.regimes(last_rows).tolist()


def test_short_history_is_padded(trained, fd001) -> None:
    bundle = trained.bundle
    unit1 = fd001.test[fd001.test["unit"] == 1]
    short = bundle.predict([unit1.head(3), unit1.head(1)])
    assert [o["cycles_in_window"] for o in short] == [3, 1]
    assert all(np.isfinite(o["rul"]) and o["rul"] >= 0 for o in short)


def test_bad_histories_are_refused(trained, fd001) -> None:
    bundle = trained.bundle
    unit1 = fd001.test[fd001.test["unit"] == 1].head(10)
    with pytest.raises(InputError, match="strictly increase"):
        bundle.predict([unit1.iloc[::-1]])
    with pytest.raises(InputError, match="lacks columns: sensor_21"):
        bundle.predict([unit1.drop(columns="sensor_21")])
    with pytest.raises(InputError, match="NaN"):
        bundle.predict([unit1.assign(sensor_2=np.nan)])
    with pytest.raises(InputError, match="at least one cycle"):
        bundle.predict([[]])
    records = unit1.to_dict(orient="records")
    del records[3]["setting_2"]  # the same check on the serving form (a list of cycles)
    with pytest.raises(InputError, match=r"lacks columns: setting_2$"):
        bundle.predict([records])
    records = unit1.to_dict(orient="records")
    records[-1]["sensor_4"] = "hot"
    with pytest.raises(InputError, match="not a number"):
        bundle.predict([records])


def test_bundle_save_load_same_predictions(trained, tmp_path: Path) -> None:
    bundle = trained.bundle
    smoke = bundle.smoke_inputs()
    assert len(smoke) == 2 and len(smoke[0]) < bundle.window < len(smoke[1])
    before = bundle.predict(smoke)
    loaded = load_bundle(bundle.save(tmp_path / "bundle"))
    assert isinstance(loaded, TurbofanBundle)
    assert loaded.transform == bundle.transform
    after = loaded.predict(loaded.smoke_inputs())
    np.testing.assert_allclose([o["rul"] for o in after], [o["rul"] for o in before], rtol=1e-5)


def test_window_budget_trains_on_thinned_windows(data_dir: Path, fd001) -> None:
    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    config = FitConfig(hgb_max_iter=30, max_windows=5_000)  # 20631 rows: every 5th
    fit = train_bundle(settings, fd001.train, model_name="hgb", seed=1, config=config)
    bundle = fit.bundle
    assert fit.window_stride == 5
    assert len(fd001.train) / 5 <= fit.train_windows <= len(fd001.train) / 5 + 100
    metrics = evaluate_bundle(bundle, fd001.test, fd001.rul)
    assert metrics["rmse"] < 25  # a constant predictor scores about 40


def test_hgb_trees_are_grown_with_the_configured_settings(data_dir: Path, fd001) -> None:
    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    config = FitConfig(
        hgb_max_iter=20, hgb_learning_rate=0.1, hgb_max_leaf_nodes=7, hgb_min_samples_leaf=100,
        hgb_l2_regularization=2.0, hgb_max_features=0.7,
    )  # fmt: skip
    bundle = train_bundle(settings, fd001.train, model_name="hgb", seed=3, config=config).bundle
    params = bundle.members[0].estimator.get_params()  # the refit on all units
    assert {k: params[k] for k in ("learning_rate", "max_leaf_nodes", "min_samples_leaf",
                                   "l2_regularization", "max_features", "random_state")} == {
        "learning_rate": 0.1, "max_leaf_nodes": 7, "min_samples_leaf": 100,
        "l2_regularization": 2.0, "max_features": 0.7, "random_state": 3,
    }  # fmt: skip


def test_hgb_bundle_round_trip(data_dir: Path, fd001, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    fit = train_bundle(
        settings, fd001.train, model_name="hgb", seed=1, config=FitConfig(hgb_max_iter=30)
    )
    bundle = fit.bundle
    assert bundle.window == 20
    assert len(fit.history["hgb"]["val_loss"]) == 30
    # the refit on every unit grows the tree count the validation split chose
    best = int(np.argmin(fit.history["hgb"]["val_loss"])) + 1
    assert fit.epochs["hgb refit"] == best == bundle.members[0].estimator.n_iter_
    assert fit.window_stride == 1 and fit.train_windows == len(fd001.train)
    loaded = load_bundle(bundle.save(tmp_path / "hgb"))
    # the default multi-scale features: of (10, 30, 60) only 10 fits in a 20-cycle window
    assert loaded.members[0].params == {"scales": [10, 30, 60]}
    n = bundle.transform.n_features
    assert loaded.members[0].estimator.n_features_in_ == 6 * n + 2 * n
    smoke = bundle.smoke_inputs()
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(smoke)], [o["rul"] for o in bundle.predict(smoke)]
    )


def test_mlp_learns_rolling_features_with_its_scaler_inside(
    data_dir: Path, fd001, tmp_path: Path
) -> None:
    from machine_health.domains.turbofan.features import rolling_features
    from machine_health.domains.turbofan.training import bundle_transform

    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    config = FitConfig(epochs=8, patience=3, hgb_scales=(5, 10))
    fit = train_bundle(settings, fd001.train, model_name="mlp", seed=4, config=config)
    bundle = fit.bundle
    assert fit.epochs["mlp refit"] == fit.history["mlp"]["best_epoch"][0]
    member = bundle.members[0]
    assert member.params == {"scales": [5, 10]}
    n = bundle.transform.n_features
    assert member.estimator.input_shape == (None, 6 * n + 2 * 2 * n)
    # the refit's normalisation is adapted to the rolling features of every training unit
    transform = bundle_transform(settings, fd001.train, config, seed=4)
    features = rolling_features(transform.windows(fd001.train, every_cycle=True), (5, 10))
    norm = next(layer for layer in member.estimator.layers if layer.name.startswith("normal"))
    np.testing.assert_allclose(np.ravel(norm.mean), features.mean(axis=0), rtol=1e-4, atol=1e-4)
    metrics = evaluate_bundle(bundle, fd001.test, fd001.rul)
    assert metrics["rmse"] < 25  # a constant predictor scores about 40
    loaded = load_bundle(bundle.save(tmp_path / "mlp"))
    assert loaded.members[0].params == {"scales": [5, 10]}
    smoke = bundle.smoke_inputs()
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(smoke)], [o["rul"] for o in bundle.predict(smoke)],
        rtol=1e-5,
    )  # fmt: skip


def test_served_ensemble_is_hgb_and_three_mlps(data_dir: Path, fd001, tmp_path: Path) -> None:
    from machine_health.domains.turbofan.models import DEFAULT_MODEL, predict_member

    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    config = FitConfig(epochs=4, patience=2, hgb_max_iter=30)
    fit = train_bundle(settings, fd001.train, seed=5, config=config)  # the default
    bundle = fit.bundle
    assert bundle.model_name == DEFAULT_MODEL == "ensemble"
    assert [m.name for m in bundle.members] == ["hgb", "mlp", "mlp", "mlp"]
    assert set(fit.weights) == {"hgb", "mlp", "mlp#2", "mlp#3"}
    assert fit.weights["mlp"] == fit.weights["mlp#2"] == fit.weights["mlp#3"]
    windows = bundle.transform.windows(fd001.test, every_cycle=False)
    each = [predict_member(m, windows) for m in bundle.members]
    assert not np.allclose(each[1], each[2])  # three fits with their own seeds, not one
    expected = np.clip(np.average(each, axis=0, weights=bundle.weights) * bundle.cap, 0, None)
    np.testing.assert_allclose(bundle.predict_windows(windows), expected, rtol=1e-6)
    assert evaluate_bundle(bundle, fd001.test, fd001.rul)["rmse"] < 25
    loaded = load_bundle(bundle.save(tmp_path / "ensemble"))
    np.testing.assert_allclose(loaded.predict_windows(windows), expected, rtol=1e-5)


def test_cached_history_rows_score_like_plain_rows(fd001) -> None:
    """The API's cached rows (`HistoryRow`, values computed once) read exactly like plain dicts."""
    from machine_health.domains.turbofan import TurbofanCycle
    from machine_health.domains.turbofan.bundle import HistoryRow, history_values
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS

    unit = fd001.test[fd001.test["unit"] == 49].head(40)
    rows = [
        TurbofanCycle(unit_id="u49", cycle=int(r.cycle), settings=[r[c] for c in SETTINGS],
                      sensors=[r[c] for c in SENSORS]).as_row()
        for _, r in unit.iterrows()
    ]  # fmt: skip
    assert all(isinstance(row, HistoryRow) for row in rows)
    cached = history_values(rows, 30)
    np.testing.assert_array_equal(cached, history_values([dict(r) for r in rows], 30))
    np.testing.assert_array_equal(cached[:, 0], unit["cycle"].to_numpy()[-30:])
    mixed = [*rows[:-1], dict(rows[-1])]  # a new cycle not yet cached: the plain path
    np.testing.assert_array_equal(history_values(mixed, 30), cached)
    with pytest.raises(InputError, match="strictly increase"):
        history_values([*rows, rows[0]], 30)


def test_ensemble_weights_learned_on_validation_and_served(
    data_dir: Path, fd001, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from machine_health.domains.turbofan import models
    from machine_health.domains.turbofan.models import predict_member
    from machine_health.domains.turbofan.training import learn_weights, validation_cuts

    monkeypatch.setitem(models.ENSEMBLES, "pair", ("cnn", "hgb"))
    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=20)
    # no refit: the bundle's members are the ones the validation split scored
    config = FitConfig(epochs=3, patience=2, hgb_max_iter=30, hgb_scales=(5, 10),
                       refit_all=False)  # fmt: skip
    fit = train_bundle(settings, fd001.train, model_name="pair", seed=2, config=config)
    bundle = fit.bundle
    assert set(fit.weights) == {"cnn", "hgb"}
    assert sum(fit.weights.values()) == pytest.approx(1.0)
    assert bundle.weights == pytest.approx(list(fit.weights.values()))
    assert fit.val_rmse_last > 0 and fit.val_phm_last > 0
    # the weights are the grid optimum of the test-like cuts of the VALIDATION units only
    val = fd001.train[fd001.train["unit"].isin(fit.val_units)].reset_index(drop=True)
    mask, rul = validation_cuts(val)
    assert fit.val_cuts == mask.sum()
    windows = bundle.transform.windows(val, every_cycle=True, keep=mask)
    member_pred = [predict_member(m, windows) for m in bundle.members]
    assert learn_weights(["cnn", "hgb"], member_pred, rul, bundle.cap) == bundle.weights
    like = np.clip(np.average(member_pred, axis=0, weights=bundle.weights) * bundle.cap, 0, None)
    assert fit.val_rmse_last == pytest.approx(float(np.sqrt(np.mean((like - rul) ** 2))))
    # serving applies them: predict_windows is the weighted mean, also after a save and load
    units, served = predict_test(bundle, fd001.test)
    test_windows = bundle.transform.windows(fd001.test, every_cycle=False)
    expected = np.average(
        [predict_member(m, test_windows) for m in bundle.members], axis=0, weights=bundle.weights
    )
    np.testing.assert_allclose(served, np.clip(expected * bundle.cap, 0, None), rtol=1e-6)
    loaded = load_bundle(bundle.save(tmp_path / "pair"))
    assert loaded.weights == pytest.approx(bundle.weights)
    assert loaded.members[1].params == {"scales": [5, 10]}
    n = bundle.transform.n_features
    assert bundle.members[1].estimator.n_features_in_ == 6 * n + 2 * 2 * n  # + last 5, last 10
    records = [fd001.test[fd001.test["unit"] == u].to_dict(orient="records") for u in units[:4]]
    np.testing.assert_allclose([o["rul"] for o in loaded.predict(records)], served[:4], rtol=1e-5)
    assert loaded.describe()["weights"] == pytest.approx(bundle.weights)


def test_bundle_without_saved_weights_is_the_plain_mean(trained, tmp_path: Path) -> None:
    import json

    bundle = trained.bundle
    path = bundle.save(tmp_path / "old")
    meta_file = next(path.rglob("members.json"))
    meta = json.loads(meta_file.read_text())
    meta.pop("weights")  # a bundle saved before the learned weights
    for entry in meta["members"]:
        entry.pop("params")
    meta_file.write_text(json.dumps(meta))
    loaded = load_bundle(path)
    assert loaded.weights is None
    smoke = bundle.smoke_inputs()
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(smoke)],
        [o["rul"] for o in bundle.predict(smoke)],
        rtol=1e-5,
    )


@pytest.mark.parametrize(("name", "recurrent"), [("lstm", "LSTM"), ("cnn_gru", "GRU")])
def test_recurrent_sequence_models_learn_and_round_trip(
    data_dir: Path, fd001, tmp_path: Path, name: str, recurrent: str
) -> None:
    """The two Keras sequence models besides the CNN: they read whole windows through a
    recurrent layer, learn from the training file and serve the same after a save and load."""
    settings = Settings(_env_file=None, data_dir=data_dir, turbofan_window=30)
    # Quick: every 4th cycle's window, a few epochs, no refit (docs/BENCHMARKS.md has the full
    # protocol's figures).
    config = FitConfig(epochs=8, patience=2, refit_all=False, max_windows=5_200)
    fit = train_bundle(settings, fd001.train, model_name=name, seed=6, config=config)
    bundle = fit.bundle
    model = bundle.members[0].estimator
    assert model.input_shape == (None, 30, bundle.transform.n_features)
    assert any(type(layer).__name__ == recurrent for layer in model.layers)
    curve = fit.history[name]["val_loss"]
    assert min(curve) < curve[0]  # it learned past its first epoch on the held-out units
    metrics = evaluate_bundle(bundle, fd001.test, fd001.rul)
    assert metrics["rmse"] < 25  # a constant predictor scores about 40
    loaded = load_bundle(bundle.save(tmp_path / name))
    smoke = bundle.smoke_inputs()
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(smoke)], [o["rul"] for o in bundle.predict(smoke)],
        rtol=1e-5,
    )  # fmt: skip
