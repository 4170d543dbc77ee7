"""2-D PCA of archived predictions' feature vectors (the UI's projection page).

Computed here rather than in the UI: the features need the archived waveforms (8 kB a window;
hundreds of them would be megabytes of JSON per page view) and the domain's feature code with
the SERVED model's configuration, both of which the API has; the UI receives two numbers a point.

Features are the domain's (`Domain.projection_features`: the ones its drift reports compare,
with the served model's configuration, e.g. a vibration window's features averaged over its
model-length chunks, or a turbofan cycle's settings and sensors). Each feature is standardised,
constant ones are dropped, then `sklearn.decomposition.PCA(2)`.

Archived rows whose features cannot be standardised (NaN, infinity, a malformed input, or a
magnitude whose square overflows: inputs archived before the API bounded them) are dropped and
counted in the answer (`dropped`), never a 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from machine_health.domains.base import Domain, ModelBundle
from machine_health.errors import DataError, InputError

MIN_POINTS = 3
_TOP_LOADINGS = 4
#: beyond this magnitude a feature's square (its variance) overflows float64 over many rows
MAX_MAGNITUDE = 1e150
#: what a malformed archived record raises while its features are made
_BAD_RECORD = (DataError, KeyError, TypeError, ValueError, FloatingPointError)


def feature_frame(
    domain: Domain, records: Sequence[Mapping[str, Any]], bundle: ModelBundle | None
) -> pd.DataFrame:
    """One row of features per archived record (NaN where a record's features cannot be made)."""
    try:
        with np.errstate(all="ignore"):
            return domain.projection_features(records, bundle).reset_index(drop=True)
    except _BAD_RECORD:
        pass  # a malformed record among them: one at a time below
    rows: list[Any] = []
    for record in records:
        try:
            with np.errstate(all="ignore"):
                rows.append(domain.projection_features([record], bundle).iloc[0])
        except (*_BAD_RECORD, IndexError):
            rows.append(None)
    columns = next((r.index for r in rows if r is not None), None)
    if columns is None:
        return pd.DataFrame(index=range(len(rows)), dtype=float)
    blank = pd.Series(np.nan, index=columns)
    return pd.DataFrame([blank if r is None else r for r in rows]).reset_index(drop=True)


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def project(
    domain: Domain, records: Sequence[Mapping[str, Any]], bundle: ModelBundle | None
) -> dict[str, Any]:
    """PCA coordinates of `records` with what each point predicted and its label; rows that
    cannot be standardised are dropped (`dropped`). `bundle`: the served model (its feature
    configuration), None when none is loaded."""
    empty = {"domain": domain.name, "points": [], "explained_variance": []}
    if len(records) < MIN_POINTS:
        return {**empty, "n": len(records), "dropped": 0}
    frame = feature_frame(domain, records, bundle).astype(float)
    values = frame.to_numpy()
    with np.errstate(invalid="ignore"):
        usable = (np.isfinite(values) & (np.abs(values) <= MAX_MAGNITUDE)).all(axis=1)
    dropped = int((~usable).sum())
    records = [r for r, ok in zip(records, usable, strict=True) if ok]
    frame = frame.loc[usable].reset_index(drop=True)
    if len(records) < MIN_POINTS:
        return {**empty, "n": 0, "dropped": dropped}
    frame = frame.loc[:, frame.notna().all() & (frame.std(ddof=0) > 1e-12)]
    if frame.shape[1] < 2:
        raise InputError(f"{domain.name}: fewer than 2 varying features among the archived inputs")
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
        "domain": domain.name,
        "n": len(points),
        "dropped": dropped,
        "n_features": int(frame.shape[1]),
        "explained_variance": [float(v) for v in pca.explained_variance_ratio_],
        "loadings": loadings,
        "points": points,
    }
