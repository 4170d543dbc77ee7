"""Live performance: archived predictions scored against the labels that arrived, per model version.

- turbofan: a unit's failure back-fills the true RUL of every archived cycle (label =
  cycles left). As in the C-MAPSS literature, RMSE and the PHM08 score are taken on the LAST
  archived cycle of each unit whose failure is known (`rmse`, `phm08`); `rmse_all_cycles`
  scores every labelled cycle against the true RUL capped like the training target.
- vibration: feedback gives the inspected class. Fault detection (is_anomaly vs label != normal)
  gives precision and recall; the fault class gives accuracy and macro-F1.

A version with fewer than `MIN_LABELLED` labelled units (turbofan) or windows (vibration) is
reported with `status: "insufficient_labels"` and never trips the performance trigger.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from machine_health.config import Settings
from machine_health.errors import InputError
from machine_health.monitoring import reports

logger = logging.getLogger(__name__)

MIN_LABELLED = {"turbofan": 5, "vibration": 20}
#: labelled predictions read per run (turbofan cycles are small; vibration inputs are skipped).
MAX_LABELLED = 200_000
NORMAL = "normal"


def turbofan_performance(
    records: Sequence[Mapping[str, Any]], *, rul_cap: float
) -> dict[str, dict[str, Any]]:
    """Per model version: RMSE and PHM08 on each unit's last labelled cycle, and all cycles."""
    from machine_health.domains.turbofan.metrics import phm08_score

    by_version: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("label") is not None and "rul" in (record.get("output") or {}):
            by_version[str(record["model_version"])].append(record)
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
        enough = len(last) >= MIN_LABELLED["turbofan"]
        result[version] = {
            "status": "ok" if enough else "insufficient_labels",
            "n_units": len(last),
            "n_predictions": len(rows),
            "rmse": float(np.sqrt(np.mean((pred_last - true_last) ** 2))),
            "phm08": phm08_score(true_last, pred_last),
            "rmse_all_cycles": float(np.sqrt(np.mean((pred_all - true_all) ** 2))),
        }
    return result


def vibration_performance(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model version: fault detection precision/recall, class accuracy and macro-F1."""
    by_version: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("label") is not None and "is_anomaly" in (record.get("output") or {}):
            by_version[str(record["model_version"])].append(record)
    result = {}
    for version, rows in by_version.items():
        truth = [str(r["label"]) for r in rows]
        predicted = [str(r["output"].get("fault_class", "")) for r in rows]
        is_fault = np.array([t != NORMAL for t in truth])
        alarm = np.array([bool(r["output"]["is_anomaly"]) for r in rows])
        enough = len(rows) >= MIN_LABELLED["vibration"]
        result[version] = {
            "status": "ok" if enough else "insufficient_labels",
            "n_predictions": len(rows),
            "n_faults": int(is_fault.sum()),
            "precision": float(precision_score(is_fault, alarm, zero_division=0)),
            "recall": float(recall_score(is_fault, alarm, zero_division=0)),
            "false_alarm_rate": float(alarm[~is_fault].mean()) if (~is_fault).any() else 0.0,
            "class_accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        }
    return result


def degraded(domain: str, metrics: Mapping[str, Any], settings: Settings) -> bool:
    """Whether one version's live metrics are below the retraining threshold."""
    if metrics.get("status") != "ok":
        return False
    if domain == "turbofan":
        return float(metrics["rmse"]) > settings.live_rmse_max
    if domain == "vibration":
        return float(metrics["recall"]) < settings.live_recall_min
    raise InputError(f"no live performance for domain {domain!r}")


def run_performance(
    settings: Settings,
    domain: str,
    *,
    now: datetime,
    window: timedelta | None = None,
    limit: int = MAX_LABELLED,
) -> dict[str, Any]:
    """Score the labels that arrived before `now` (predictions made in the last `window`, or
    all; the newest `limit` of them), per model version; store the report and return it."""
    start = None if window is None else now - window
    with reports.store(settings) as db:
        records = reports.archived_predictions(
            db, domain, start=start, end=now, labelled=True, with_input=False, limit=limit
        )
        if domain == "turbofan":
            versions = turbofan_performance(records, rul_cap=settings.rul_cap)
        elif domain == "vibration":
            versions = vibration_performance(records)
        else:
            raise InputError(f"no live performance for domain {domain!r}")
        for metrics in versions.values():
            metrics["degraded"] = degraded(domain, metrics, settings)
        report = {
            "domain": domain,
            "n_labelled": len(records),
            "window_start": start,
            "window_end": now,
            # a list, not a dict keyed by version: store keys stay plain field names
            "versions": [{"model_version": v, **m} for v, m in sorted(versions.items())],
            "degraded_versions": sorted(v for v, m in versions.items() if m["degraded"]),
            "thresholds": {
                "rmse_max": settings.live_rmse_max,
                "recall_min": settings.live_recall_min,
            },
        }
        reports.save(db, reports.PERFORMANCE, domain, report, created_at=now)
    logger.info(
        "%s live performance: %d labelled predictions, %d versions, degraded %s",
        domain, len(records), len(versions), report["degraded_versions"] or "none",
    )  # fmt: skip
    return report
