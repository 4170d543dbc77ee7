"""RUL metrics as the C-MAPSS literature reports them (plain functions of arrays)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def phm08_score(rul_true: np.ndarray, rul_pred: np.ndarray) -> float:
    """PHM08 score: sum of exp(-d/13) - 1 for early (d < 0) and exp(d/10) - 1 for late predictions.

    d = predicted - true; late predictions (d > 0) cost more, as a late maintenance call does.
    """
    d = np.asarray(rul_pred, dtype="float64") - np.asarray(rul_true, dtype="float64")
    return float(np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0)).sum())


def smape(rul_true: np.ndarray, rul_pred: np.ndarray) -> float:
    """Symmetric MAPE in percent; a pair where both values are 0 counts as a perfect 0."""
    t = np.asarray(rul_true, dtype="float64")
    p = np.asarray(rul_pred, dtype="float64")
    denom = np.abs(t) + np.abs(p)
    ratio = np.divide(2 * np.abs(p - t), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * ratio.mean())


def rul_metrics(rul_true: np.ndarray, rul_pred: np.ndarray) -> dict[str, float]:
    """rmse, mae, r2, smape and phm_score of predictions against the true RUL."""
    return {
        "rmse": float(np.sqrt(mean_squared_error(rul_true, rul_pred))),
        "mae": float(mean_absolute_error(rul_true, rul_pred)),
        "r2": float(r2_score(rul_true, rul_pred)),
        "smape": smape(rul_true, rul_pred),
        "phm_score": phm08_score(rul_true, rul_pred),
    }
