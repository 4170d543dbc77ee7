"""The turbofan part of the retraining pipeline's steps (called through `TurbofanDomain`).

- extract: one row per archived cycle (cycle, settings, sensors, label = the back-filled RUL);
- validate: physical bounds, one failure cycle per unit; a unit with one bad row is quarantined
  whole (its windows are built from consecutive cycles and its labels from one failure);
- training set: base FD001 training histories minus the reference units + archived units
  observed until failure (minus the field holdout);
- gate slices (`reference.py`): reference = the FD001 training units carved out of every
  training set; field = the most recent archived units observed until failure (`field_holdout`);
- evaluation set (headline, information only): the FD001 test units minus those the snapshot
  holds;
- rescale: operating regimes + flat-sensor removal + per-regime z-score (`bundle_transform`: on
  every unit, as the refitted members use it) -> `transform.json`, `rescaled.parquet`;
- train: `train_bundle` with the retrain's fit configuration, logged to the active MLflow run.
  With archived units the training set holds two fleets, `base` (FD001) and `archive`, of equal
  total weight (`training.fleet_weights`); their units, row weights and shares are logged as the
  `fleets` param and as `fleet_<name>_*` figures of the step's result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from machine_health.config import Settings
from machine_health.domains.base import (
    EvaluationSet,
    ModelBundle,
    Problem,
    TrainingSet,
    TrainResult,
)
from machine_health.domains.turbofan import reference
from machine_health.domains.turbofan.data import COLUMNS, SENSORS, SETTINGS, load_subset
from machine_health.domains.turbofan.models import FitConfig
from machine_health.errors import ValidationFailed
from machine_health.pipeline.rescale import RESCALED, SEED
from machine_health.pipeline.workspace import Workspace, write_json_atomic

#: the C-MAPSS subset the turbofan champion is trained on (workflow.train_and_register).
BASE_SUBSET = "FD001"
N_SETTINGS, N_SENSORS = len(SETTINGS), len(SENSORS)
#: physical bounds (not statistics of one data set): C-MAPSS sensors are temperatures (R),
#: pressures (psia), speeds (rpm), ratios and flows, all positive and below 1e5; settings are
#: altitude/Mach/throttle codes within +-1e2.
RANGES = {"setting": (-1e2, 1e2), "sensor": (0.0, 1e5), "label": (0.0, 1e4)}
TRANSFORM = "transform.json"
_FINGERPRINT_DECIMALS = 4


# --- extract ----------------------------------------------------------------------------------
def snapshot_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("cycle", pa.int64()),
            *[pa.field(f"setting_{i}", pa.float64()) for i in range(1, N_SETTINGS + 1)],
            *[pa.field(f"sensor_{i}", pa.float64()) for i in range(1, N_SENSORS + 1)],
            pa.field("label", pa.float64()),
        ]
    )


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def snapshot_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    data = doc.get("input") or {}
    settings, sensors = list(data.get("settings") or []), list(data.get("sensors") or [])
    # A wrong length is kept visible (NaN-padded) for validate to report, never dropped here.
    settings = (settings + [None] * N_SETTINGS)[:N_SETTINGS]
    sensors = (sensors + [None] * N_SENSORS)[:N_SENSORS]
    row: dict[str, Any] = {"cycle": int(doc["cycle"]) if doc.get("cycle") is not None else None}
    row.update({f"setting_{i + 1}": _number(v) for i, v in enumerate(settings)})
    row.update({f"sensor_{i + 1}": _number(v) for i, v in enumerate(sensors)})
    row["label"] = _number(doc.get("label"))
    return row


# --- validate ---------------------------------------------------------------------------------
def validation_problems(table: pa.Table, settings: Settings) -> list[Problem]:
    """Every rule a row breaks; a unit with one bad row is quarantined whole (the rules take
    nothing from `settings`)."""
    problems: list[Problem] = []
    for name in table.column_names:
        if name.startswith(("setting_", "sensor_")) or name in ("label", "cycle"):
            values = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
            if (bad := ~np.isfinite(values)).any():
                problems.append((f"{name} is missing, NaN or infinite", bad))
            kind = "label" if name == "label" else name.split("_")[0]
            if kind in RANGES:
                low, high = RANGES[kind]
                if (bad := (values < low) | (values > high)).any():
                    problems.append((f"{name} outside [{low:g}, {high:g}]", bad))
            if name == "cycle" and (bad := values < 1).any():
                problems.append(("cycle below 1", bad))
    frame = table.select(["asset_id", "cycle", "label"]).to_pandas()
    # Labels come from a posted failure: cycle + RUL is the failure cycle, one per unit.
    failure = frame["cycle"] + frame["label"]
    spread = failure.groupby(frame["asset_id"]).transform(lambda s: s.max() - s.min())
    if (bad := (spread > 1e-6).to_numpy()).any():
        problems.append(("cycle + RUL differs inside a unit (inconsistent failure labels)", bad))
    duplicated = frame.duplicated(["asset_id", "cycle"]).to_numpy()
    if duplicated.any():
        problems.append(("a unit's cycle is archived twice", duplicated))
    units = frame["asset_id"].to_numpy()
    whole: list[Problem] = []
    for rule, mask in problems:
        unit_mask = np.isin(units, np.unique(units[mask]))
        whole.append((rule if (unit_mask == mask).all() else f"{rule} (in its unit)", unit_mask))
    return whole


def validation_facts(table: pa.Table) -> dict[str, Any]:
    frame = table.select(["asset_id", "cycle", "label"]).to_pandas()
    last = frame.groupby("asset_id")["label"].min()
    return {
        "units": int(last.size),
        "units_to_failure": int((last == 0).sum()),
        "label_quantiles": {
            q: float(np.quantile(frame["label"], float(q))) for q in ("0.1", "0.5", "0.9")
        }
        if len(frame)
        else {},
    }


# --- training and evaluation sets -------------------------------------------------------------
def archive_frame(table: pa.Table) -> pd.DataFrame:
    """Snapshot rows as C-MAPSS history rows (unit = archived asset id) with the true RUL."""
    frame = table.to_pandas()
    if frame.empty:
        return pd.DataFrame(columns=[*COLUMNS, "rul"])
    frame = frame.rename(columns={"asset_id": "unit", "label": "rul"})
    frame = frame.sort_values(["unit", "cycle"], kind="stable").reset_index(drop=True)
    return frame[[*COLUMNS, "rul"]]


def training_set(settings: Settings, table: pa.Table) -> TrainingSet:
    """Base FD001 training histories + archived units observed until failure.

    The domain trains on run-to-failure histories (target = last cycle - cycle). An archived unit
    whose last labelled cycle has RUL 0 is one; a unit whose series stops earlier (its failure
    posted later) is not, and is counted but kept out of training rather than given targets that
    would be wrong by its remaining life.
    """
    base = reference.fit_units(load_subset(settings.data_dir, BASE_SUBSET).train)
    archived = archive_frame(table)
    if archived.empty:
        return TrainingSet(
            (base, None), {"base_units": int(base["unit"].nunique()), "archived_units": 0,
                           "archived_rows_used": 0}
        )  # fmt: skip
    last = archived.groupby("unit").tail(1).set_index("unit")["rul"]
    complete = last.index[last == 0]
    extra = archived[archived["unit"].isin(complete)][COLUMNS].reset_index(drop=True)
    facts = {
        "base_subset": BASE_SUBSET,
        "base_rows": len(base),
        "base_units": int(base["unit"].nunique()),
        "archived_units": int(last.size),
        "archived_units_to_failure": len(complete),
        "archived_units_truncated": int(last.size - len(complete)),
        "archived_rows_used": len(extra),
    }
    return TrainingSet((base, extra if len(extra) else None), facts)


def reference_set(settings: Settings) -> EvaluationSet:
    """The FD001 training units carved out of every training set (`reference.py`)."""
    train = load_subset(settings.data_dir, BASE_SUBSET).train
    return reference.slice_of(reference.reference_units(train), f"{BASE_SUBSET} train")


def _complete_units(archived: pd.DataFrame) -> pd.Index:
    last = archived.groupby("unit").tail(1).set_index("unit")["rul"]
    return last.index[last == 0]


def field_holdout(table: pa.Table) -> np.ndarray:
    """Whole units: the most recent `FIELD_SHARE` of the archived units observed until failure
    (by their last cycle's archive time); a unit is one history, its cycles cannot be split."""
    from machine_health.domains.base import FIELD_SHARE

    mask = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return mask
    frame = table.select(["asset_id", "created_at", "label"]).to_pandas()
    complete = frame.groupby("asset_id")["label"].min()
    complete = complete.index[complete == 0]
    take = int(FIELD_SHARE * len(complete))
    if take == 0:
        return mask
    latest = frame[frame["asset_id"].isin(complete)].groupby("asset_id")["created_at"].max()
    held = latest.sort_values(kind="stable").index[-take:]
    return frame["asset_id"].isin(held).to_numpy()


def field_set(settings: Settings, table: pa.Table) -> EvaluationSet | None:
    """The held-out archived units observed until failure, as run-to-failure histories."""
    archived = archive_frame(table)
    if archived.empty:
        return None
    histories = archived[archived["unit"].isin(_complete_units(archived))][COLUMNS]
    if histories.empty:
        return None
    return reference.slice_of(histories, "archive")


def _fingerprints(frame: pd.DataFrame) -> pd.Series:
    values = frame[["cycle", *SETTINGS, *SENSORS]].astype("float64").round(_FINGERPRINT_DECIMALS)
    return pd.util.hash_pandas_object(values, index=False)


def evaluation_set(settings: Settings, table: pa.Table) -> EvaluationSet:
    """The FD001 test units and their true RUL, without the units the snapshot holds."""
    data = load_subset(settings.data_dir, BASE_SUBSET)
    test = data.test
    units = np.sort(test["unit"].unique())
    archived = archive_frame(table)
    leaked: set[int] = set()
    if not archived.empty:
        seen = set(_fingerprints(archived).tolist())
        hits = _fingerprints(test).isin(seen).to_numpy()
        leaked = {int(u) for u in test.loc[hits, "unit"].unique()}
    keep = np.array([u not in leaked for u in units])
    if not keep.any():
        raise ValidationFailed(
            "every turbofan test unit appears in the archive: no held-out data is left to "
            "compare champion and challenger"
        )
    test = test[test["unit"].isin(units[keep])].reset_index(drop=True)
    facts = {
        "eval_subset": BASE_SUBSET,
        "eval_units": int(keep.sum()),
        "eval_units_excluded": len(leaked),
    }
    return EvaluationSet((test, np.asarray(data.rul)[keep]), facts)


# --- rescale and train ------------------------------------------------------------------------
def fit_config(settings: Settings) -> FitConfig:
    """The retrain's fit configuration (MH_RETRAIN_EPOCHS, MH_RETRAIN_MAX_WINDOWS)."""
    return FitConfig(
        epochs=settings.retrain_epochs,
        patience=min(10, settings.retrain_epochs),
        max_windows=settings.retrain_max_windows,
    )


def rescale(settings: Settings, training: TrainingSet, ws: Workspace) -> dict[str, Any]:
    from machine_health.domains.turbofan.training import bundle_transform, merge_extra

    base, extra = training.data
    frame = merge_extra(base, extra)
    transform = bundle_transform(settings, frame, fit_config(settings), seed=SEED)
    features = transform.transform_rows(frame)
    columns = transform.sensors + (["cycle_feature"] if transform.cycle_scale > 0 else [])
    out = pd.DataFrame(features, columns=columns)
    out.insert(0, "cycle", frame["cycle"].to_numpy())
    out.insert(0, "unit", frame["unit"].to_numpy())
    out.to_parquet(ws.file(RESCALED), index=False)
    write_json_atomic(ws.file(TRANSFORM), transform.to_dict())
    return {
        "transform": str(ws.file(TRANSFORM)),
        "regimes": transform.n_regimes,
        "sensors_kept": len(transform.sensors),
        "sensors_dropped": transform.dropped,
        "rows": len(frame),
    }


def transform_gap(bundle: ModelBundle, ws: Workspace) -> float:
    fitted = json.loads(ws.file(TRANSFORM).read_text())
    mine = bundle.transform.to_dict()  # type: ignore[attr-defined]
    if fitted["sensors"] != mine["sensors"]:
        return float("inf")
    gaps = [
        np.max(np.abs(np.asarray(fitted[k], dtype=float) - np.asarray(mine[k], dtype=float)))
        for k in ("settings_mean", "settings_std", "regime_mean", "regime_std")
    ]
    return float(max(gaps))


def train(settings: Settings, training: TrainingSet, ws: Workspace) -> TrainResult:
    """Train the challenger; log params, metrics, learning curves and the drift reference (`ws`:
    the `Domain.train` signature, not read here)."""
    import matplotlib.pyplot as plt

    from machine_health import registry
    from machine_health.domains.turbofan.monitoring import drift_reference
    from machine_health.domains.turbofan.plots import plot_learning_curves
    from machine_health.domains.turbofan.training import merge_extra, train_bundle
    from machine_health.monitoring.reference import log_reference

    base, extra = training.data
    fit = train_bundle(
        settings, base, model_name=settings.retrain_turbofan_model, seed=SEED, extra_df=extra,
        config=fit_config(settings),
    )  # fmt: skip
    registry.log_params(
        {"model": fit.model, "epochs": fit.epochs, "window_stride": fit.window_stride,
         "fleets": json.dumps(fit.fleets) if fit.fleets else "-"}
    )  # fmt: skip
    fleet_figures = _fleet_figures(fit.fleets)
    registry.log_metrics(
        {"train_seconds": fit.train_seconds, "val_rmse": fit.val_rmse,
         "val_rmse_last": fit.val_rmse_last, "val_phm_last": fit.val_phm_last, **fleet_figures}
    )  # fmt: skip
    fig = plot_learning_curves(fit.history, f"retrain {fit.model}")
    registry.log_figure(fig, "plots/learning_curve.png")
    plt.close(fig)
    log_reference(drift_reference(merge_extra(base, extra), source="pipeline"))
    return TrainResult(
        fit.bundle,
        {
            "train_seconds": fit.train_seconds,
            "val_rmse": fit.val_rmse,
            "val_rmse_last": fit.val_rmse_last,
            "train_windows": fit.train_windows,
            "window_stride": fit.window_stride,
            **fleet_figures,
        },
    )


def _fleet_figures(fleets: Mapping[str, Mapping[str, float]] | None) -> dict[str, float]:
    """Flat `fleet_<name>_<fact>` figures of `TurbofanFit.fleets` (finite values only)."""
    return {
        f"fleet_{name}_{key}": float(value)
        for name, facts in (fleets or {}).items()
        for key, value in facts.items()
        if np.isfinite(value)
    }
