"""Turbofan drift features and live performance (called through `TurbofanDomain`).

- drift (and projection) features: the 3 operating settings and 21 sensors of one cycle, one row
  per archived prediction; the sampling unit is the engine (its cycles are not independent);
- live performance: a unit's failure back-fills the true RUL of every archived cycle (label =
  cycles left). As in the C-MAPSS literature, RMSE and the PHM08 score are taken on the LAST
  archived cycle of each unit whose failure is known (`rmse`, `phm08`); `rmse_all_cycles`
  scores every labelled cycle against the true RUL capped like the training target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from machine_health.domains.base import labelled_by_version
from machine_health.domains.turbofan.data import SENSORS, SETTINGS
from machine_health.errors import DataError
from machine_health.monitoring.reference import Reference, build_reference

DOMAIN = "turbofan"


def inputs(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Settings and sensors of C-MAPSS rows (a `domains.turbofan.data` frame) and their units."""
    columns = [*SETTINGS, *SENSORS]
    return frame[columns].astype(float).reset_index(drop=True), [str(u) for u in frame["unit"]]


def inputs_from_records(
    records: Iterable[Mapping[str, Any]],
) -> tuple[pd.DataFrame, list[str]]:
    """The same columns from archived turbofan predictions (input: settings[3], sensors[21])."""
    rows, groups = [], []
    for record in records:
        body = record["input"]
        values = [*body["settings"], *body["sensors"]]
        if len(values) != len(SETTINGS) + len(SENSORS):
            raise DataError(
                f"archived turbofan input of {record.get('prediction_id')} is malformed"
            )
        rows.append(values)
        groups.append(str(record.get("asset_id")))
    return pd.DataFrame(rows, columns=[*SETTINGS, *SENSORS], dtype=float), groups


def projection_features(records: Sequence[Mapping[str, Any]], bundle: Any = None) -> pd.DataFrame:
    """One row of drift inputs per record (`bundle`: not read, the inputs are the raw cycle)."""
    return inputs_from_records(records)[0]


def drift_reference(train: pd.DataFrame, **meta: Any) -> Reference:
    """Reference of a turbofan model trained on the C-MAPSS rows `train`."""
    values, units = inputs(train)
    return build_reference(DOMAIN, values, groups=units, meta=meta)


def live_performance(
    records: Sequence[Mapping[str, Any]], *, rul_cap: float, min_units: int
) -> dict[str, dict[str, Any]]:
    """Per model version: RMSE and PHM08 on each unit's last labelled cycle, and all cycles."""
    from machine_health.domains.turbofan.metrics import phm08_score

    by_version = labelled_by_version(records, "rul")
    result = {}
    for version, rows in by_version.items():
        last: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            unit = str(row["asset_id"])
            if unit not in last or (row.get("cycle") or 0) > (last[unit].get("cycle") or 0):
                last[unit] = row
        true_last = np.array([float(r["label"]) for r in last.values()])
        pred_last = np.array([float(r["output"]["rul"]) for r in last.values()])
        true_all = np.minimum([float(r["label"]) for r in rows], rul_cap)
        pred_all = np.array([float(r["output"]["rul"]) for r in rows])
        enough = len(last) >= min_units
        result[version] = {
            "status": "ok" if enough else "insufficient_labels",
            "n_units": len(last),
            "n_predictions": len(rows),
            "rmse": float(np.sqrt(np.mean((pred_last - true_last) ** 2))),
            "phm08": phm08_score(true_last, pred_last),
            "rmse_all_cycles": float(np.sqrt(np.mean((pred_all - true_all) ** 2))),
        }
    return result
