"""Training and evaluation of turbofan RUL models (no MLflow, no plots: see `workflow`, `plots`).

- `train_bundle(settings, train_df, model_name=..., seed=...)` -> `TurbofanFit` (the bundle and
  what its training measured);
- `evaluate_bundle(bundle, test_df, rul_true)` -> metrics of the LAST cycle of each test unit.

Model selection and early stopping use a validation split BY UNIT of the training histories;
the test file is used only by `evaluate_bundle`.

Fleets: with `extra_df` (the retrain's archived units) the training set holds several fleets:
the base training file is fleet `base`, the extra units fleet `archive` (or, when `extra_df` has
a `fleet` column, one fleet per value of it). Every fleet gets the same total weight
(`fleet_weights`), so neither the 80 base units nor a few hundred archived ones drown the other:
the members' losses (and the validation loss that picks their epochs or trees), the per-regime
scaling and the ensemble's learned weights are all fleet-weighted. A fleet's rows never weigh
more than `MAX_UPWEIGHT` x an unweighted row: a handful of archived units is up-weighted, but
cannot become half of what the model learns from. Without extra units nothing is weighted: the
code paths, and the figures, are the plain ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from machine_health.config import Settings
from machine_health.domains.turbofan.bundle import TurbofanBundle
from machine_health.domains.turbofan.data import rul_targets, split_units
from machine_health.domains.turbofan.features import FeatureTransform, fit_transform, thin_rows
from machine_health.domains.turbofan.metrics import phm08_score, rul_metrics
from machine_health.domains.turbofan.models import (
    DEFAULT_MODEL,
    FitConfig,
    Fitted,
    fit_member,
    members_of,
    predict_member,
    refit_member,
)

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2
SMOKE_LENGTHS = (12, 120)  # one history shorter than the window (padding), one longer
#: The test-like validation score. The test file scores ONE cut of each unit, made at some cycle
#: before failure, against the TRUE (uncapped) RUL; the plain validation RMSE scores every cycle
#: against the capped target, where the long flat start of each life is easy. The test-like
#: score takes every cycle of a validation unit that such a cut can be (the average over
#: uniformly drawn cuts, without their sampling noise): at least TEST_LIKE_MIN_CYCLES of history
#: and a true RUL of at most TEST_LIKE_MAX_RUL (the range of C-MAPSS FD001's published test
#: RUL, which ends at 145), scored against the uncapped RUL.
TEST_LIKE_MIN_CYCLES = 30
TEST_LIKE_MAX_RUL = 150
WEIGHT_STEP = 0.05  # grid step of the ensemble's learned weights
#: the fleet of the base training file, and of extra units without a `fleet` column
BASE_FLEET, ARCHIVE_FLEET = "base", "archive"
#: the most a fleet's rows may weigh, relative to an unweighted row (see the module doc)
MAX_UPWEIGHT = 4.0


@dataclass(frozen=True)
class TurbofanFit:
    """A trained bundle and what its training measured (see `train_bundle`)."""

    bundle: TurbofanBundle
    model: str
    seed: int
    train_seconds: float
    #: every cycle of the validation units vs the capped target
    val_rmse: float
    #: the test-like validation scores (see TEST_LIKE_MIN_CYCLES) and how many cuts they hold
    val_rmse_last: float
    val_phm_last: float
    val_cuts: int
    #: an ensemble's member weights by member label (None: one member, or equal weights)
    weights: dict[str, float] | None
    val_units: list[int]
    train_unit_ids: list[int]
    #: learning curves per member label (loss, val_loss, ...)
    history: dict[str, dict[str, list[float]]]
    #: epochs (trees for boosting) per member label, and per refitted member
    epochs: dict[str, int]
    window_stride: int
    train_windows: int
    #: per fleet (only with extra units): units, rows, weight of one row, share of the total
    #: weight, and the test-like validation RMSE of its validation units (see `fleet_weights`)
    fleets: dict[str, dict[str, float]] | None = None


def validation_cuts(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(mask over `frame`'s rows, uncapped true RUL of those rows) of the test-like cuts of
    run-to-failure histories (see TEST_LIKE_MIN_CYCLES)."""
    rul = rul_targets(frame, cap=None)
    order = frame.groupby("unit").cumcount().to_numpy() + 1  # cycles of history at that row
    mask = (order >= TEST_LIKE_MIN_CYCLES) & (rul <= TEST_LIKE_MAX_RUL)
    return mask, rul[mask]


def cut_scores(rul_true: np.ndarray, rul_pred: np.ndarray) -> dict[str, float]:
    """val_rmse_last and val_phm_last (PHM08 per 100 cuts, the test file's count of units)."""
    pred = np.clip(rul_pred, 0.0, None)
    return {
        "val_rmse_last": float(np.sqrt(np.mean((pred - rul_true) ** 2))),
        "val_phm_last": 100 * phm08_score(rul_true, pred) / max(len(rul_true), 1),
    }


def learn_weights(
    names: Sequence[str],
    predictions: Sequence[np.ndarray],
    rul_true: np.ndarray,
    cap: float,
    sample_weight: np.ndarray | None = None,
) -> list[float]:
    """Member weights minimising the test-like validation RMSE (validation units only).

    One weight per member NAME on a grid of step WEIGHT_STEP over the simplex (repeats of a name,
    the ensemble's seeds, share it equally): few free parameters for 20 validation units.
    `predictions` are the members' scaled outputs (RUL / cap) on the test-like rows;
    `sample_weight` (the rows' fleet weights) weights their squared errors.
    """
    groups = list(dict.fromkeys(names))
    group_pred = np.stack([
        np.mean([p for n, p in zip(names, predictions, strict=True) if n == g], axis=0)
        for g in groups
    ])  # fmt: skip
    steps = round(1 / WEIGHT_STEP)
    best: tuple[float, tuple[int, ...]] | None = None
    for combo in _compositions(steps, len(groups)):
        w = np.asarray(combo, dtype="float64") / steps
        err = (np.clip(w @ group_pred * cap, 0, None) - rul_true) ** 2
        rmse = float(np.sqrt(np.average(err, weights=sample_weight)))
        if best is None or rmse < best[0] - 1e-9:
            best = (rmse, combo)
    assert best is not None
    per_group = {g: c / steps for g, c in zip(groups, best[1], strict=True)}
    return [per_group[n] / names.count(n) for n in names]


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Every tuple of `parts` non-negative integers summing to `total`."""
    if parts == 1:
        return [(total,)]
    return [(k, *rest) for k in range(total + 1) for rest in _compositions(total - k, parts - 1)]


def merge_extra(train_df: pd.DataFrame, extra_df: pd.DataFrame | None) -> pd.DataFrame:
    """Append extra run-to-failure histories, renumbering their units after the training ones.

    The merged frame gains a `fleet` column (`BASE_FLEET` for the training rows, the extra
    rows' own `fleet` or `ARCHIVE_FLEET`): what `fleet_weights` weights by. Without extra rows
    the training frame is returned as it is (one fleet, nothing weighted).
    """
    if extra_df is None or extra_df.empty:
        return train_df
    offset = int(train_df["unit"].max())
    codes, _ = pd.factorize(extra_df["unit"])
    extra = extra_df.assign(unit=codes + offset + 1)
    if "fleet" not in extra.columns:
        extra = extra.assign(fleet=ARCHIVE_FLEET)
    base = train_df if "fleet" in train_df.columns else train_df.assign(fleet=BASE_FLEET)
    return pd.concat([base, extra[base.columns]], ignore_index=True)


def fleet_weights(frame: pd.DataFrame) -> np.ndarray | None:
    """One weight per row of `frame`: every fleet (its `fleet` column) the same total weight.

    A row of fleet f weighs N / (F x n_f) (N rows, F fleets, n_f rows in f), at most
    `MAX_UPWEIGHT`; the weights are then scaled to a mean of 1, so a weighted loss keeps the
    unweighted one's scale (Keras's learning rate, hgb's regularisation). None with one fleet or
    no `fleet` column: the caller's unweighted path.
    """
    if "fleet" not in frame.columns or len(frame) == 0:
        return None
    codes, names = pd.factorize(frame["fleet"])
    if len(names) < 2:
        return None
    rows = np.bincount(codes, minlength=len(names)).astype("float64")
    per_row = np.minimum(len(frame) / (len(names) * rows), MAX_UPWEIGHT)
    weights = per_row[codes]
    return weights * (len(frame) / weights.sum())


def fleet_facts(frame: pd.DataFrame) -> dict[str, dict[str, float]] | None:
    """Per fleet of `frame`: units, rows, the weight of one row and the fleet's share of the
    total weight (`fleet_weights`); None with one fleet."""
    weights = fleet_weights(frame)
    if weights is None:
        return None
    total = float(weights.sum())
    facts = {}
    for name, rows in frame.groupby("fleet", sort=False):
        mask = (frame["fleet"] == name).to_numpy()
        facts[str(name)] = {
            "units": int(rows["unit"].nunique()),
            "rows": len(rows),
            "row_weight": round(float(weights[mask][0]), 6),
            "share": round(float(weights[mask].sum()) / total, 6),
        }
    return facts


def _weights(frame: pd.DataFrame, stride: int = 1) -> np.ndarray | None:
    """The fleet weights of the windows `_xy(frame, stride)` builds (the thinned rows)."""
    keep = thin_rows(frame, stride)
    return fleet_weights(frame if keep is None else frame[keep])


def _xy(
    transform: FeatureTransform, frame: pd.DataFrame, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    keep = thin_rows(frame, stride)
    windows = transform.windows(frame, every_cycle=True, keep=keep)
    y = rul_targets(frame, transform.cap) / transform.cap
    return windows, (y if keep is None else y[keep]).astype("float32")


def window_stride(rows: int, config: FitConfig) -> int:
    """Every how many cycles a training window is taken so that `rows` fit `config.max_windows`."""
    if config.max_windows is None or rows <= config.max_windows:
        return 1
    return math.ceil(rows / config.max_windows)


def _smoke_histories(frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """Real histories kept from training: the first cycles of two units, as JSON records."""
    units = pd.unique(frame["unit"])[: len(SMOKE_LENGTHS)]
    out = []
    for unit, length in zip(units, SMOKE_LENGTHS, strict=False):
        rows = frame[frame["unit"] == unit].head(length).drop(columns="fleet", errors="ignore")
        out.append(json.loads(rows.to_json(orient="records")))
    return out


def train_bundle(
    settings: Settings,
    train_df: pd.DataFrame,
    *,
    model_name: str = DEFAULT_MODEL,
    seed: int = 0,
    extra_df: pd.DataFrame | None = None,
    config: FitConfig | None = None,
    _cache: dict[tuple[str, int], tuple[Fitted, float]] | None = None,
) -> TurbofanFit:
    """Fit the feature transform and the model on training histories (no test data).

    `extra_df` holds more run-to-failure histories (same columns) appended to the training file.
    The window and RUL cap come from `settings` (`turbofan_window`, `rul_cap`). Returns the
    bundle and what training measured: train_seconds, validation RMSE (all cycles of the
    validation units vs the capped target), the test-like validation scores (`val_rmse_last`,
    `val_phm_last`: see TEST_LIKE_MIN_CYCLES), an ensemble's member weights (learned on those
    test-like cuts, applied by the bundle), learning curves per member, the validation units.
    With `config.refit_all` the returned members are refitted on all units for the epochs early
    stopping chose; the validation figures and the weights are the split run's.
    """
    config = config or FitConfig()
    names = members_of(model_name)
    # A repeated member (the ensemble's three MLPs) trains with another seed each.
    seeds = [seed + 1000 * names[:i].count(name) for i, name in enumerate(names)]
    labels = [name if k == seed else f"{name}#{(k - seed) // 1000 + 1}" for name, k in
              zip(names, seeds, strict=True)]  # fmt: skip
    frame = merge_extra(train_df, extra_df)
    fit_part, val_part = split_units(frame, val_fraction=VAL_FRACTION, seed=seed)
    transform = _fit(settings, fit_part, config)
    stride = window_stride(len(frame), config)  # one stride for every split: same sampling
    train_xy, val_xy = _xy(transform, fit_part, stride), _xy(transform, val_part, stride)
    # Fleet weights (None without extra units: the unweighted path, unchanged).
    weighted = {
        "sample_weight": _weights(fit_part, stride), "val_weight": _weights(val_part, stride)
    }  # fmt: skip
    seconds = 0.0

    def trained(key: tuple[str, int], fit: Any) -> Fitted:
        nonlocal seconds
        hit = _cache.get(key) if _cache is not None else None
        if hit is None:
            started = time.perf_counter()
            hit = (fit(), time.perf_counter() - started)
            if _cache is not None:
                _cache[key] = hit
        seconds += hit[1]
        return hit[0]

    members = [
        trained((name, k), lambda name=name, k=k: fit_member(
            name, train_xy, val_xy, seed=k, config=config, **weighted))
        for name, k in zip(names, seeds, strict=True)
    ]  # fmt: skip
    val_units = sorted(int(u) for u in val_part["unit"].unique())
    # The test-like validation cuts (validation units only, every eligible cycle, no thinning).
    like_mask, like_rul = validation_cuts(val_part)
    like_windows = transform.windows(val_part, every_cycle=True, keep=like_mask)
    like_member = [predict_member(m, like_windows) for m in members]
    like_weight = fleet_weights(val_part[like_mask])
    weights = None
    if len(members) > 1 and config.learn_weights:
        weights = learn_weights(names, like_member, like_rul, transform.cap, like_weight)
    split_bundle = TurbofanBundle(transform, members, model_name=model_name, weights=weights)
    val_pred = split_bundle.predict_windows(val_xy[0])
    val_rmse = float(np.sqrt(np.mean((val_pred - val_xy[1] * transform.cap) ** 2)))
    like_pred = np.average(like_member, axis=0, weights=split_bundle.weights) * transform.cap
    like = cut_scores(like_rul, like_pred)
    fleets = fleet_facts(frame)
    if fleets is not None:  # the test-like validation RMSE of each fleet's validation units
        like_fleet = val_part["fleet"].to_numpy()[like_mask]
        for name, facts in fleets.items():
            mine = like_fleet == name
            facts["val_rmse_last"] = (
                cut_scores(like_rul[mine], like_pred[mine])["val_rmse_last"] if mine.any()
                else float("nan")
            )  # fmt: skip
    epochs = {
        label: len(m.history.get("loss", [])) for label, m in zip(labels, members, strict=True)
    }
    used, windows_used = fit_part, len(train_xy[0])
    if config.refit_all:
        # The split only chose the epoch (tree) counts: refit on every training unit for that many.
        used, transform = frame, _fit(settings, frame, config)
        all_xy = _xy(transform, frame, stride)
        all_weight = _weights(frame, stride)
        windows_used = len(all_xy[0])
        members = [
            trained((f"refit:{m.name}", k), lambda m=m, k=k: refit_member(
                m, all_xy, seed=k, config=config, sample_weight=all_weight))
            for m, k in zip(members, seeds, strict=True)
        ]  # fmt: skip
        epochs |= {f"{label} refit": _refit_size(m)
                   for label, m in zip(labels, members, strict=True)}  # fmt: skip
    bundle = TurbofanBundle(
        transform, members, model_name=model_name, smoke=_smoke_histories(used),
        facts={"seed": seed, "train_units": int(used["unit"].nunique()),
               "val_units": len(val_units), "refit_all": config.refit_all, **like,
               **({} if fleets is None else {"fleets": fleets})},
        weights=split_bundle.weights,
    )  # fmt: skip
    return TurbofanFit(
        bundle=bundle,
        model=model_name,
        seed=seed,
        train_seconds=seconds,
        val_rmse=val_rmse,
        val_rmse_last=like["val_rmse_last"],
        val_phm_last=like["val_phm_last"],
        val_cuts=int(like_mask.sum()),
        weights=None if weights is None else dict(zip(labels, weights, strict=True)),
        val_units=val_units,
        train_unit_ids=sorted(int(u) for u in fit_part["unit"].unique()),
        history={label: m.history for label, m in zip(labels, members, strict=True)},
        epochs=epochs,
        window_stride=stride,
        train_windows=windows_used,
        fleets=fleets,
    )


def _refit_size(member: Fitted) -> int:
    """Epochs (Keras) or trees (boosting) a refitted member was trained for."""
    if member.kind == "sklearn":
        return int(member.estimator.n_iter_)
    return len(member.history.get("refit_loss", []))


def _fit(settings: Settings, frame: pd.DataFrame, config: FitConfig) -> FeatureTransform:
    return fit_transform(
        frame, window=settings.turbofan_window, cap=settings.rul_cap,
        use_cycle=config.use_cycle, smoothing=config.smoothing, max_levels=config.max_levels,
        sample_weight=fleet_weights(frame),
    )  # fmt: skip


#: Public names of the first two steps of `train_bundle` (the transform fitted with the
#: settings' window and cap; the windows and scaled targets of a frame), for the validation
#: studies in research/.
fit_feature_transform = _fit
windows_and_targets = _xy


def bundle_transform(
    settings: Settings, frame: pd.DataFrame, config: FitConfig, *, seed: int
) -> FeatureTransform:
    """The transform `train_bundle(frame, seed=seed, config=config)` puts in its bundle: fitted
    on every unit when the members are refitted on all of them, else on the unit-wise split."""
    if config.refit_all:
        return _fit(settings, frame, config)
    fit_part, _ = split_units(frame, val_fraction=VAL_FRACTION, seed=seed)
    return _fit(settings, fit_part, config)


def predict_test(bundle: TurbofanBundle, test_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unit ids, predicted RUL at each unit's LAST cycle), one model call for all units."""
    ordered = test_df.sort_values(["unit", "cycle"], kind="stable")
    windows = bundle.transform.windows(ordered, every_cycle=False)
    return np.asarray(pd.unique(ordered["unit"])), bundle.predict_windows(windows)


def evaluate_bundle(
    bundle: TurbofanBundle, test_df: pd.DataFrame, rul_true: np.ndarray
) -> dict[str, float]:
    """rmse, mae, r2, smape, phm_score of the last cycle of each test unit vs the true RUL.

    `rul_true[i]` belongs to the i-th smallest test unit id (the RUL_FD00x convention).
    """
    started = time.perf_counter()
    _, predicted = predict_test(bundle, test_df)
    elapsed = time.perf_counter() - started
    metrics = rul_metrics(np.asarray(rul_true, dtype="float64"), predicted)
    metrics["predict_ms_per_unit"] = 1000 * elapsed / max(len(predicted), 1)
    return metrics
