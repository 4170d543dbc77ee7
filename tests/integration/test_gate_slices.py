"""The gate's slices on real data and real models: the reference carve-outs are never trained
on, a challenger that learned new field data passes, a degraded one does not (acoustic: clips
of a new machine; turbofan: engines of a new fleet, FD002 after FD001)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.acoustic.reference import roc_auc
from machine_health.domains.base import EvaluationSet, ModelBundle
from machine_health.pipeline.evaluate import judge_slice
from tests.support.paths import DATA_DIR

ACOUSTIC, TURBOFAN, VIBRATION = "acoustic", "turbofan", "vibration"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(_env_file=None, data_dir=DATA_DIR)


def _empty(domain: str) -> pa.Table:
    from machine_health.pipeline.extract import snapshot_schema

    return snapshot_schema(domain).empty_table()


def test_turbofan_reference_units_are_never_in_a_training_set(settings: Settings) -> None:
    domain = get_domain(TURBOFAN)
    reference = domain.reference_set(settings)
    base, _ = domain.training_set(settings, _empty(TURBOFAN)).data
    held = set(reference.data["unit"].unique())
    assert len(held) == 20 and not held & set(base["unit"].unique())
    assert reference.facts["units"] == 20


def test_vibration_reference_windows_never_overlap_a_training_window(settings: Settings) -> None:
    domain = get_domain(VIBRATION)
    reference = domain.reference_set(settings).data
    training = domain.training_set(settings, _empty(VIBRATION)).data
    length = training.windows.shape[1]
    assert len(reference) > 0 and set(reference.sources) == set(training.sources)
    for source in set(reference.sources):
        first_held = reference.starts[reference.sources == source].min()
        last_fitted_end = training.starts[training.sources == source].max() + length
        assert last_fitted_end <= first_held


def test_the_numpy_auc_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, dtype=int), np.ones(20, dtype=int)]
    scores = np.round(rng.normal(size=50) + y, 1)  # ties included
    for max_fpr in (None, 0.1):
        assert roc_auc(y, scores, max_fpr) == pytest.approx(
            roc_auc_score(y, scores, max_fpr=max_fpr)
        )


def judged_on(
    domain: Any,
    slices: dict[str, EvaluationSet],
    bundle: ModelBundle,
    champion: ModelBundle,
    tolerance: float,
) -> list[dict]:
    """The gate's rows of `bundle` against `champion` on each slice, as the evaluate step
    judges them."""
    rows = []
    for kind, data in slices.items():
        rows += judge_slice(
            kind, domain.item_scores(bundle, data), domain.item_scores(champion, data), tolerance
        )  # type: ignore[arg-type]
    return rows


class Scored(ModelBundle):
    """A wrapper the gate only scores: never saved, loaded or served."""

    def save_files(self, path):  # type: ignore[no-untyped-def]  # never saved
        raise NotImplementedError

    @classmethod
    def load_files(cls, path):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def predict(self, inputs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def smoke_inputs(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class Degraded(Scored):
    """A real bundle whose anomaly scores are perturbed: a model that got worse."""

    domain = ACOUSTIC

    def __init__(self, inner: ModelBundle, noise: float) -> None:
        self.inner, self.noise = inner, noise

    def score_spectrograms(self, spectra: Sequence[np.ndarray]) -> np.ndarray:
        scores = self.inner.score_spectrograms(spectra)  # type: ignore[attr-defined]
        rng = np.random.default_rng(0)
        return scores + rng.normal(0.0, self.noise * scores.std(), len(scores))


def test_a_challenger_that_learned_field_data_passes_a_degraded_one_does_not(
    settings: Settings,
) -> None:
    from machine_health.domains.acoustic.domain import evaluation_set, training_set
    from machine_health.domains.acoustic.features import FeatureConfig, clip_stats, reduce_bands
    from machine_health.domains.acoustic.training import train_bundle

    domain = get_domain(ACOUSTIC)
    base = training_set(DATA_DIR)
    champion, _ = train_bundle(base, seed=0)
    # New field data: clips of the target machine (the shifted domain) archived in the
    # 32-band form. The challenger fits ten of its normal clips; the others are the field slice.
    field_clips = evaluation_set(DATA_DIR)
    target = field_clips.clips.domains == "target"
    archived = reduce_bands(field_clips.spectra, 32)
    learned = np.flatnonzero(target & (field_clips.clips.y == 0))[:10]
    extra = clip_stats(archived[learned], FeatureConfig())
    challenger, _ = train_bundle(base, seed=0, extra_normal=extra)
    rest = np.setdiff1d(np.flatnonzero(target), learned)
    field = EvaluationSet(
        {"spectra": list(archived[rest]), "y": field_clips.clips.y[rest], "domain": None}, {}
    )
    reference = domain.reference_set(settings)

    def judged(bundle: ModelBundle) -> list[dict]:
        return judged_on(domain, {"reference": reference, "field": field}, bundle, champion,
                         settings.gate_tolerance)  # fmt: skip

    # The challenger did learn the clips: its field scores are not the champion's.
    mine, theirs = domain.item_scores(challenger, field), domain.item_scores(champion, field)
    assert len(extra) == len(learned) == 10
    assert any(not np.allclose(mine.columns[k], theirs.columns[k]) for k in mine.columns)
    learned_rows = judged(challenger)
    assert {(r["slice"], r["metric"]) for r in learned_rows} == {
        ("reference", "official_score"), ("reference", "auc_target"), ("field", "auc"),
    }  # fmt: skip
    assert all(r["passed"] for r in learned_rows), learned_rows
    for row in learned_rows:  # every row carries its interval and its groups
        low, high = row["interval"]
        assert low <= row["difference"] <= high and row["n_groups"] >= len(rest)

    degraded_rows = judged(Degraded(challenger, noise=1.5))
    failed = [r for r in degraded_rows if not r["passed"]]
    assert failed and {r["slice"] for r in failed} >= {"reference"}, degraded_rows
    assert all("worse" in r["verdict"] for r in failed)


def test_the_field_slice_is_the_latest_fifth_of_each_asset_held_out_of_training(
    settings: Settings,
) -> None:
    from datetime import UTC, datetime, timedelta

    from machine_health.domains.base import recent_rows
    from machine_health.pipeline import datasets

    start = datetime(2026, 1, 1, tzinfo=UTC)
    assets = ["a"] * 10 + ["b"] * 5 + ["c"] * 4  # c: too few rows for a fifth
    times = [start + timedelta(minutes=(7 * i) % 19) for i in range(len(assets))]
    table = pa.table({"asset_id": assets, "created_at": pa.array(times, pa.timestamp("ms", "UTC"))})
    held = recent_rows(table)
    assert held.sum() == 2 + 1
    for asset in "ab":
        rows = [i for i, a in enumerate(assets) if a == asset]
        latest = sorted(rows, key=lambda i: times[i])[-int(0.2 * len(rows)) :]
        assert set(np.flatnonzero(held)) & set(rows) == set(latest)
    assert recent_rows(table, cap=1).sum() == 1
    # Turbofan holds out whole units observed until failure (a fifth of them: 1 of 5), the most
    # recent; u6 never reached failure and stays where it is.
    units = ["u1"] * 3 + ["u2"] * 3 + ["u3", "u4", "u5"] + ["u6"] * 2
    hours = [1, 2, 3, 4, 5, 9, 6, 7, 8, 10, 11]
    stamps = pa.array([start + timedelta(hours=h) for h in hours], pa.timestamp("ms", "UTC"))
    labels = [2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 5.0, 4.0]
    frame = pa.table({"asset_id": units, "created_at": stamps, "label": labels})
    mask = datasets.field_mask(TURBOFAN, frame)
    assert frame.filter(pa.array(mask)).column("asset_id").to_pylist() == ["u2"] * 3


# --- turbofan: a challenger that learned archived units of a new fleet ------------------------
class DegradedRul(Scored):
    """A real turbofan bundle whose RUL predictions are perturbed: a model that got worse."""

    domain = TURBOFAN

    def __init__(self, inner: ModelBundle, noise: float) -> None:
        self.inner, self.noise = inner, noise
        self.transform = inner.transform  # type: ignore[attr-defined]

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        rul = self.inner.predict_windows(windows)  # type: ignore[attr-defined]
        rng = np.random.default_rng(0)
        return np.clip(rul + rng.normal(0.0, self.noise, len(rul)), 0.0, None)


def _archived_units(histories: pd.DataFrame) -> pa.Table:
    """Run-to-failure histories as the retrain's snapshot of archived, labelled turbofan cycles:
    one unit after the other (a later unit id = archived later), each labelled with its RUL
    (the failure back-filled), the way the API's archive holds them."""
    from datetime import UTC, datetime, timedelta

    from machine_health.domains.turbofan.data import SENSORS, SETTINGS
    from machine_health.pipeline.extract import snapshot_schema

    frame = histories.sort_values(["unit", "cycle"], kind="stable").reset_index(drop=True)
    last = frame.groupby("unit")["cycle"].transform("max")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = [start + timedelta(minutes=i) for i in range(len(frame))]
    columns = {
        "prediction_id": [f"p{i}" for i in range(len(frame))],
        "asset_id": [f"FD002-{u}" for u in frame["unit"]],
        "created_at": stamps,
        "labelled_at": stamps,
        "model_version": ["1"] * len(frame),
        "cycle": frame["cycle"].astype("int64"),
        **{c: frame[c].astype("float64") for c in [*SETTINGS, *SENSORS]},
        "label": (last - frame["cycle"]).astype("float64"),
    }
    return pa.Table.from_pydict(
        {k: list(v) for k, v in columns.items()}, schema=snapshot_schema(TURBOFAN)
    )


@pytest.mark.slow
def test_a_turbofan_challenger_that_learned_a_new_fleet_passes_a_degraded_one_does_not() -> None:
    from threadpoolctl import threadpool_limits

    from machine_health.domains.turbofan.data import load_subset
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.reference import fit_units
    from machine_health.domains.turbofan.training import TurbofanFit, train_bundle
    from machine_health.pipeline import datasets

    # A 30-cycle window, hgb alone, every 2nd-3rd cycle's window: the gate's logic, at test
    # speed. One OpenMP thread: on a loaded machine hgb's threads spin-wait for each other.
    settings = Settings(_env_file=None, data_dir=DATA_DIR, turbofan_window=30)
    config = FitConfig(hgb_max_iter=100, max_windows=12_000)
    domain = get_domain(TURBOFAN)
    fd001, fd002 = load_subset(DATA_DIR, "FD001"), load_subset(DATA_DIR, "FD002")

    def trained(base: pd.DataFrame, extra: pd.DataFrame | None = None) -> TurbofanFit:
        with threadpool_limits(1):
            return train_bundle(settings, base, model_name="hgb", extra_df=extra, config=config)

    champion = trained(fit_units(fd001.train)).bundle
    # New field data: 100 FD002 engines (six operating regimes; FD001 knows one) archived to
    # failure. The product's split: the latest fifth of them is the field slice, held out of
    # the training set; the other 80 join the FD001 base as a second fleet of equal weight.
    table = _archived_units(fd002.train[fd002.train["unit"] <= 100])
    training = datasets.training_set(settings, TURBOFAN, table)
    field = datasets.field_set(settings, TURBOFAN, table)
    assert field is not None and field.facts["units"] == 20
    base, extra = training.data
    assert extra is not None and extra["unit"].nunique() == 80
    fit = trained(base, extra)
    challenger = fit.bundle
    assert fit.fleets is not None and {f: v["units"] for f, v in fit.fleets.items()} == {
        "base": 80, "archive": 80,
    }  # fmt: skip
    reference = domain.reference_set(settings)

    def judged(bundle: ModelBundle) -> list[dict]:
        return judged_on(domain, {"reference": reference, "field": field}, bundle, champion,
                         settings.gate_tolerance)  # fmt: skip

    learned = judged(challenger)
    assert {(r["slice"], r["metric"]) for r in learned} == {
        ("reference", "rmse"), ("reference", "phm_score"), ("field", "rmse"),
        ("field", "phm_score"),
    }  # fmt: skip
    assert all(r["passed"] for r in learned), learned
    field_rows = [r for r in learned if r["slice"] == "field"]
    assert all(r["verdict"].startswith("significantly better") for r in field_rows), field_rows
    assert all(r["n_groups"] == 20 for r in field_rows)
    # The champion never saw those regimes: the held-out field units are novel to it, hardly
    # ever to the challenger (its training fleets cover them; a unit's last cycles before failure
    # can still hold one sensor reading beyond the training range: 1 of 20 in one run).
    held = [g for _, g in field.data.groupby("unit")]
    assert all(a["novelty"]["novel"] for a in champion.predict(held))
    assert sum(a["novelty"]["novel"] for a in challenger.predict(held)) <= 2

    degraded = judged(DegradedRul(challenger, noise=30.0))
    failed = [r for r in degraded if not r["passed"]]
    assert failed and {r["slice"] for r in failed} == {"reference"}, degraded
    assert all("worse beyond the tolerance" in r["verdict"] for r in failed)
