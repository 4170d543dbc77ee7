"""2-D PCA of archived predictions' feature vectors (the UI's projection page).

Computed here rather than in the UI: the features need the archived waveforms (8 kB a window;
hundreds of them would be megabytes of JSON per page view) and the domain's feature code with
the SERVED model's configuration, both of which the API has; the UI receives two numbers a point.

Features per domain (the same ones the drift reports compare, `monitoring.reference`):
vibration = the domain's window features (a long window: the mean over its model-length chunks),
turbofan = the 3 operating settings and 21 sensors of the cycle. Each feature is standardised,
constant ones are dropped, then `sklearn.decomposition.PCA(2)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from machine_health.errors import InputError
from machine_health.monitoring.reference import (
    turbofan_inputs_from_records,
    vibration_features_from_records,
)

MIN_POINTS = 3
_TOP_LOADINGS = 4


def feature_frame(domain: str, records: Sequence[Mapping[str, Any]], config: Any) -> pd.DataFrame:
    """One row of features per archived record."""
    if domain == "turbofan":
        return turbofan_inputs_from_records(records)[0]
    if domain == "vibration":
        rows = [vibration_features_from_records([r], config).mean(axis=0) for r in records]
        return pd.DataFrame(rows).reset_index(drop=True)
    raise InputError(f"no projection features for domain {domain!r}")


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def project(domain: str, records: Sequence[Mapping[str, Any]], config: Any) -> dict[str, Any]:
    """PCA coordinates of `records` with what each point predicted and its label."""
    if len(records) < MIN_POINTS:
        return {"domain": domain, "n": len(records), "points": [], "explained_variance": []}
    frame = feature_frame(domain, records, config).astype(float)
    frame = frame.loc[:, frame.notna().all() & (frame.std(ddof=0) > 1e-12)]
    if frame.shape[1] < 2:
        raise InputError(f"{domain}: fewer than 2 varying features among the archived inputs")
    scaled = (frame - frame.mean()) / frame.std(ddof=0)
    pca = PCA(n_components=2, random_state=0)
    coords = pca.fit_transform(scaled.to_numpy())
    loadings = [
        [
            {"feature": str(frame.columns[j]), "weight": float(component[j])}
            for j in np.argsort(-np.abs(component))[:_TOP_LOADINGS]
        ]
        for component in pca.components_
    ]
    points = []
    for record, (x, y) in zip(records, coords, strict=True):
        output = record.get("output") or {}
        points.append(
            {
                "prediction_id": record["prediction_id"],
                "asset_id": record.get("asset_id"),
                "cycle": record.get("cycle"),
                "model_version": record.get("model_version"),
                "created_at": record.get("created_at"),
                "x": float(x),
                "y": float(y),
                "fault_class": output.get("fault_class"),
                "is_anomaly": output.get("is_anomaly"),
                "rul": _finite(output.get("rul")),
                "label": _finite(record.get("label")),
            }
        )
    return {
        "domain": domain,
        "n": len(points),
        "n_features": int(frame.shape[1]),
        "explained_variance": [float(v) for v in pca.explained_variance_ratio_],
        "loadings": loadings,
        "points": points,
    }
