"""Turbofan explanations (`TurbofanBundle.explain`, trend removal) on real FD001 unit histories,
with the session's trained model (a small CNN) and a real ensemble holding a tree member.

"A sensor trends" is judged without the model: |Spearman correlation of the sensor with the
cycle| over the unit's whole run to failure above `TRENDS` (FD001's degrading sensors reach
0.65-0.9 over a life; noise-only ones stay well below). The whole life, not the history the
model was given (its last 15 cycles left out): on that shorter history the noisiest degrading
sensors (W32, htBleed: integer steps) of the shortest life, unit 3's 179 cycles, fall to 0.5-0.6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor

from machine_health import registry
from machine_health.domains.base import EXPLANATION_KEYS
from machine_health.domains.turbofan import TurbofanBundle
from machine_health.domains.turbofan.data import SENSORS, load_subset, rul_targets
from machine_health.domains.turbofan.explain import MIN_CONTRIBUTION
from machine_health.domains.turbofan.features import rolling_features, thin_rows
from machine_health.domains.turbofan.models import Fitted
from tests.support.models import TrainedModels
from tests.support.reliability.scenarios import registry_settings

pytestmark = pytest.mark.slow  # the session's trained models

TRENDS = 0.6  # |Spearman(sensor, cycle)| above which a sensor trends over a unit's history
UNITS = (1, 2, 3, 4, 5)  # FD001 training units
BEFORE_FAILURE = 15  # the late-life history stops this many cycles before the unit failed


@pytest.fixture(scope="module")
def train(data_dir: Path) -> pd.DataFrame:
    return load_subset(data_dir, "FD001").train


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, trained_models: TrainedModels
) -> TurbofanBundle:
    settings = registry_settings(tmp_path_factory.mktemp("explain") / "var",
                                 trained_models.tracking_uri)  # fmt: skip
    loaded, _ = registry.load(settings, "turbofan", version=trained_models.turbofan_version)
    assert isinstance(loaded, TurbofanBundle)
    return loaded


def late_histories(train: pd.DataFrame) -> list[pd.DataFrame]:
    out = []
    for unit in UNITS:
        rows = train[train["unit"] == unit]
        out.append(rows.iloc[: len(rows) - BEFORE_FAILURE])
    return out


def trending(train: pd.DataFrame, unit: int) -> set[str]:
    history = train[train["unit"] == unit]
    return {
        s for s in SENSORS
        if history[s].nunique() > 1 and abs(spearmanr(history[s], history["cycle"])[0]) > TRENDS
    }  # fmt: skip


def test_late_life_names_trending_sensors_in_cycles(
    bundle: TurbofanBundle, train: pd.DataFrame
) -> None:
    histories = late_histories(train)
    outputs = bundle.predict(histories)
    explained = bundle.explain(histories, outputs)
    assert bundle.predict(histories) == outputs  # explaining changed nothing
    assert bundle.explain(histories, outputs) == explained  # deterministic
    constant = {s for s in SENSORS if train[s].nunique() == 1}  # T2 P2 epr farB Nf_dmd PCNfR_dmd
    assert constant == {"sensor_1", "sensor_5", "sensor_10", "sensor_16", "sensor_18",
                        "sensor_19"}  # fmt: skip
    for unit, out, ex in zip(UNITS, outputs, explained, strict=True):
        assert out["rul"] < 40, (unit, out)  # late in life (true RUL 15)
        assert set(EXPLANATION_KEYS) <= ex.keys() and ex["method"] == "trend-removal"
        assert ex["regime"] == out["regime"] == 0 and ex["rul"] == pytest.approx(out["rul"], 1e-3)
        assert len(json.dumps(ex)) < 1500
        names = [r["sensor"] for r in ex["sensors"]]
        assert [e["name"] for e in ex["evidence"]] == names
        assert 3 <= len(names) <= 5
        assert not constant & set(names)
        assert set(names) <= set(bundle.transform.sensors)
        assert set(names[:3]) <= trending(train, unit), (unit, ex["sensors"])
        values = [r["contribution"] for r in ex["sensors"]]
        assert values == sorted(values, key=abs, reverse=True)
        assert all(abs(v) >= MIN_CONTRIBUTION for v in values)
        # the degradation trends shortened the life: the strongest by several cycles
        assert values[0] <= -5, (unit, ex["sensors"])
        assert ex["summary"].startswith(f"RUL {out['rul']:.0f}: shortened most by the trends of")


def test_contribution_is_the_predicted_life_the_trend_costs(
    bundle: TurbofanBundle, train: pd.DataFrame
) -> None:
    """Checked through `predict` alone: the top sensor's raw values with their least-squares
    line over the window removed (FD001 has one regime, so the z-scores are linear in the raw
    values) score RUL - contribution."""
    window = bundle.transform.window
    for history in late_histories(train)[:3]:
        out = bundle.predict([history])
        top = bundle.explain([history], out)[0]["sensors"][0]
        edited = history.copy()
        tail = edited.index[-window:]
        t = edited.loc[tail, "cycle"].to_numpy(dtype="float64")
        slope = np.polyfit(t, edited.loc[tail, top["sensor"]].to_numpy(), 1)[0]
        edited.loc[tail, top["sensor"]] -= slope * (t - t[0])
        without = bundle.predict([edited])[0]["rul"]
        assert out[0]["rul"] - without == pytest.approx(top["contribution"], abs=0.05), top


def test_early_life_trends_move_little(bundle: TurbofanBundle, train: pd.DataFrame) -> None:
    """30 cycles into a life of 130-290: no degradation yet, no strong contribution."""
    histories = [train[train["unit"] == unit].iloc[:30] for unit in UNITS]
    outputs = bundle.predict(histories)
    for out, ex in zip(outputs, bundle.explain(histories, outputs), strict=True):
        assert out["rul"] > 100
        assert ex["cycles_in_window"] == 30  # shorter than the window: padded as predict does
        assert all(abs(r["contribution"]) < 3 for r in ex["sensors"]), ex["sensors"]


def test_one_cycle_and_empty(bundle: TurbofanBundle, train: pd.DataFrame) -> None:
    one = [train[train["unit"] == 1].iloc[:1].to_dict("records")]  # list-of-dicts history too
    out = bundle.predict(one)
    (ex,) = bundle.explain(one, out)
    assert ex["sensors"] == ex["evidence"] == []  # one cycle: no trend at all
    assert "no sensor trend" in ex["summary"]
    assert bundle.explain([], []) == []


def test_ensemble_with_a_tree_member(bundle: TurbofanBundle, train: pd.DataFrame) -> None:
    """The served champion is an ensemble with boosted trees on rolling window features: the
    explanation works through `predict_windows` alone, whatever the members."""
    transform = bundle.transform
    keep = thin_rows(train, 10)
    windows = transform.windows(train, every_cycle=True, keep=keep)
    target = rul_targets(train, transform.cap)[keep] / transform.cap
    trees = HistGradientBoostingRegressor(max_iter=30, random_state=0)
    trees.fit(rolling_features(windows), target)
    hgb = Fitted("hgb", "sklearn", trees, history={}, params={"scales": []})
    ensemble = TurbofanBundle(transform, [*bundle.members, hgb], model_name="ensemble",
                              weights=[0.5, 0.5])  # fmt: skip
    histories = late_histories(train)
    outputs = ensemble.predict(histories)
    explained = ensemble.explain(histories, outputs)
    assert ensemble.predict(histories) == outputs
    for unit, ex in zip(UNITS, explained, strict=True):
        names = [r["sensor"] for r in ex["sensors"]]
        assert names and set(names[:3]) <= trending(train, unit), (unit, ex["sensors"])
        assert ex["sensors"][0]["contribution"] < 0
