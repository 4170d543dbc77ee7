"""The acoustic gate slices: the validation clips as the frozen reference, and item scores.

- reference: the data set's `validation` clips (normal and anomalous, source and target). The
  detector is fitted on normal `train` clips only; the validation NORMAL clips set its threshold,
  which the gate's metrics (AUC, pAUC: threshold-free rankings) do not read, so no model's
  scores on them were fitted. The same holds for a champion trained before the gate had slices;
- field: the held-out archived clips (their spectrograms as archived, 32 bands): they carry a
  label but no source/target domain, so the field slice judges the pooled AUC only;
- items: clips, independent; the bootstrap draws them within (domain, label) so both classes
  of both domains are in every resample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from machine_health.domains.base import EvaluationSet, ItemScores, ModelBundle

FIELD_DIRECTIONS: dict[str, Literal["min", "max"]] = {"auc": "max"}


def roc_auc(y: np.ndarray, scores: np.ndarray, max_fpr: float | None = None) -> float | None:
    """AUC, or the McClish-standardised partial AUC up to `max_fpr`, as scikit-learn's
    `roc_auc_score` computes them (checked against it in the tests), in numpy: the bootstrap
    calls it thousands of times, where scikit-learn's input validation dominates."""
    positives, n = int(y.sum()), len(y)
    if positives in (0, n):
        return None
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), n - 1]  # one ROC point per distinct score
    tps = np.cumsum(hits)[last]
    fpr = np.r_[0.0, (last + 1 - tps) / (n - positives)]
    tpr = np.r_[0.0, tps / positives]
    if max_fpr is None or max_fpr == 1:
        return float(np.trapezoid(tpr, fpr))
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, y_at = fpr[:stop], tpr[:stop]
    if x[-1] < max_fpr:
        x, y_at = np.r_[x, max_fpr], np.r_[y_at, np.interp(max_fpr, fpr, tpr)]
    partial = float(np.trapezoid(y_at, x))
    low, high = 0.5 * max_fpr**2, max_fpr
    return 0.5 * (1 + (partial - low) / (high - low))


def _primary(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    """official_score (harmonic mean of source AUC, target AUC, pooled pAUC) and auc_target,
    as `training.evaluate_scores` defines them."""
    from machine_health.domains.acoustic.training import MAX_FPR

    y, scores, domains = columns["y"], columns["score"], columns["domain"]
    source = roc_auc(y[domains == "source"], scores[domains == "source"])
    target = roc_auc(y[domains == "target"], scores[domains == "target"])
    parts = [source, target, roc_auc(y, scores, MAX_FPR)]
    valid = [p for p in parts if p is not None and p > 0]
    official = 3 / sum(1 / p for p in valid) if len(valid) == 3 else None
    return {"official_score": official, "auc_target": target}


def _pooled(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    return {"auc": roc_auc(columns["y"], columns["score"])}


def item_scores(bundle: ModelBundle, evaluation: EvaluationSet) -> ItemScores:
    """Anomaly score of every clip of the slice; metrics as the slice's labels allow."""
    from machine_health.domains.acoustic.domain import PRIMARY_METRICS

    data = evaluation.data
    scores = np.asarray(bundle.score_spectrograms(list(data["spectra"])), dtype=float)  # type: ignore[attr-defined]
    y = np.asarray(data["y"], dtype=np.int8)
    domains = data.get("domain")
    strata = y.astype(str) if domains is None else np.char.add(domains.astype(str), y.astype(str))
    columns = {"score": scores, "y": y}
    if domains is not None:
        columns["domain"] = np.asarray(domains)
    return ItemScores(
        groups=np.arange(len(y)).astype(str),
        columns=columns,
        metrics=_pooled if domains is None else _primary,
        directions=dict(FIELD_DIRECTIONS if domains is None else PRIMARY_METRICS),
        strata=strata,
    )


def live_item_scores(
    records: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
) -> ItemScores | None:
    """Anomaly scores of archived labelled clips against their label (pooled AUC, as the field
    slice: no source/target domain in the archive); clips are independent groups."""
    from machine_health.domains.acoustic.data import NORMAL

    keep = [
        i for i, (r, o) in enumerate(zip(records, outputs, strict=True))
        if r.get("label") is not None and "anomaly_score" in o
    ]  # fmt: skip
    if not keep:
        return None
    y = np.asarray([str(records[i]["label"]) != NORMAL for i in keep], dtype=np.int8)
    return ItemScores(
        groups=np.asarray([str(records[i].get("prediction_id", i)) for i in keep]),
        columns={"score": np.asarray([float(outputs[i]["anomaly_score"]) for i in keep]), "y": y},
        metrics=_pooled,
        directions=dict(FIELD_DIRECTIONS),
        strata=y.astype(str),
    )
