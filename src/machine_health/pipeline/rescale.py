"""Step 3: fit the feature scaling on the training split; write the rescaled set and the transform.

The transform is fitted by the DOMAIN's own code, exactly as its `train_bundle` fits it (same
data, split and seed), and the train step checks that the bundle it trains carries this very
transform: serving only ever applies the transform inside the bundle, so there is never a second
scaler that could drift apart from the model.

- turbofan: operating regimes + flat-sensor removal + per-regime z-score (`bundle_transform`:
  on every unit, as the refitted members use it) -> `transform.json`, `rescaled.parquet`;
- vibration: physics features of every training window + the StandardScaler fitted on the
  normal windows of the detector's fit split (the bundle's one scaler, shared by detector and
  classifier) -> `transform.skops`, `rescaled.parquet` (scaled features, label, source).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from machine_health.config import Settings
from machine_health.pipeline import datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.workspace import Workspace, write_json_atomic

logger = logging.getLogger(__name__)

STEP = "rescale"
RESCALED = "rescaled.parquet"
VIBRATION_FEATURES = "features.npy"  # raw physics features of the training windows, in order
SEED = 0


def turbofan_fit_config(settings: Settings) -> Any:
    from machine_health.domains.turbofan.models import FitConfig

    return FitConfig(
        epochs=settings.retrain_epochs,
        patience=min(10, settings.retrain_epochs),
        max_windows=settings.retrain_max_windows,
    )


def _turbofan(settings: Settings, ws: Workspace, training: datasets.TrainingSet) -> dict[str, Any]:
    from machine_health.domains.turbofan.training import bundle_transform, merge_extra

    base, extra = training.data
    frame = merge_extra(base, extra)
    transform = bundle_transform(settings, frame, turbofan_fit_config(settings), seed=SEED)
    features = transform.transform_rows(frame)
    columns = transform.sensors + (["cycle_feature"] if transform.cycle_scale > 0 else [])
    out = pd.DataFrame(features, columns=columns)
    out.insert(0, "cycle", frame["cycle"].to_numpy())
    out.insert(0, "unit", frame["unit"].to_numpy())
    out.to_parquet(ws.file(RESCALED), index=False)
    write_json_atomic(ws.file("transform.json"), transform.to_dict())
    return {
        "transform": str(ws.file("transform.json")),
        "regimes": transform.n_regimes,
        "sensors_kept": len(transform.sensors),
        "sensors_dropped": transform.dropped,
        "rows": len(frame),
    }


def vibration_feature_config(windows: Any) -> Any:
    """The FeatureConfig `train_bundle` derives from its windows (same rule, same values)."""
    from machine_health.domains.vibration.features import FeatureConfig

    speeds = windows.rpm[np.isfinite(windows.rpm)]
    return FeatureConfig(
        sample_rate=windows.sample_rate,
        window=windows.windows.shape[1],
        nominal_rpm=float(np.median(speeds)) if speeds.size else FeatureConfig.nominal_rpm,
    )


def _vibration(settings: Settings, ws: Workspace, training: datasets.TrainingSet) -> dict[str, Any]:
    import skops.io
    from sklearn.preprocessing import StandardScaler

    from machine_health.domains.vibration.features import extract_features, feature_names
    from machine_health.domains.vibration.training import split_fit_calibration

    windows = training.data
    config = vibration_feature_config(windows)
    features = extract_features(windows.windows, windows.rpm, config)
    fit, _ = split_fit_calibration(windows)
    scaler = StandardScaler().fit(features[fit])
    out = pd.DataFrame(scaler.transform(features), columns=feature_names(config))
    out["label"] = windows.labels
    out["source"] = windows.sources
    out.to_parquet(ws.file(RESCALED), index=False)
    np.save(ws.file(VIBRATION_FEATURES), features)  # the train step reuses them (same windows)
    skops.io.dump(scaler, ws.file("transform.skops"))
    write_json_atomic(ws.file("feature_config.json"), config.as_dict())
    return {
        "transform": str(ws.file("transform.skops")),
        "features": features.shape[1],
        "windows": len(windows),
        "scaler_fit_windows": int(fit.sum()),
    }


def run(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
) -> dict[str, Any]:
    """Fit and write the run's feature transform and rescaled training set."""
    ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
    if not force and (done := ws.result(STEP)) is not None:
        return done
    if (nothing := ws.short_circuited()) is not None:
        return ws.skipped(STEP, nothing)
    ws.require("validate")
    training = datasets.training_set(settings, domain, read_snapshot(ws))
    fitted = _turbofan if domain == "turbofan" else _vibration
    result = fitted(settings, ws, training)
    write_json_atomic(ws.file("training_facts.json"), training.facts)
    return ws.record(STEP, {"rescaled": str(ws.file(RESCALED)), **result, **training.facts})


def check_bundle_transform(domain: str, bundle: Any, ws: Workspace) -> float:
    """Largest difference between the bundle's fitted scaling and the rescale step's.

    0 means the bundle carries exactly the transform this run fitted.
    """
    if domain == "turbofan":
        fitted = json.loads(ws.file("transform.json").read_text())
        mine = bundle.transform.to_dict()
        if fitted["sensors"] != mine["sensors"]:
            return float("inf")
        gaps = [
            np.max(np.abs(np.asarray(fitted[k], dtype=float) - np.asarray(mine[k], dtype=float)))
            for k in ("settings_mean", "settings_std", "regime_mean", "regime_std")
        ]
        return float(max(gaps))

    from machine_health.domains.skops_types import load_skops

    path = ws.file("transform.skops")
    scaler = load_skops(path)  # only allow-listed types, even from the run's own workspace
    inner = bundle.scaler
    return float(
        max(
            np.max(np.abs(scaler.mean_ - inner.mean_)), np.max(np.abs(scaler.scale_ - inner.scale_))
        )
    )
