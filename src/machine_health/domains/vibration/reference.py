"""The vibration gate slices: a frozen reference carve-out of the training portion, item scores.

- reference: the last `REFERENCE_SHARE` of every recording's TRAINING portion (the samples
  just before its test portion). Windows overlapping it are never fitted (`carve`, used by the
  retrain's training set and by `workflow`'s first training), so neither champion nor
  challenger saw them; windows straddling the boundary belong to neither side;
- items: windows; the bootstrap draws whole BLOCKS of windows (`BLOCK_SAMPLES` of one
  recording or asset, within their fault class: class balance kept). Drawing whole recordings
  gave a zero-width interval: the data has ONE recording per class, so every resample drew the
  same four. Blocks of two windows' span (8 hops of 512 samples, the moving-block bootstrap of
  `research.vibration_generalisation`) measure the sampling noise within a recording; the
  spread between recordings of one class cannot be measured with one recording per class, so
  the interval understates it (the gate report's `n_groups` counts blocks);
- metrics: recall_at_fpr (share of fault windows flagged at the bundle's own threshold) and
  macro_f1 of the fault class, recomputed on each resample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from machine_health.domains.base import EvaluationSet, ItemScores, ModelBundle
from machine_health.domains.vibration.data import WindowSet

REFERENCE_SHARE = 1 / 7  # of the train portion (70 % of a recording): 10 % of the recording
#: samples per bootstrap block: two 2048-sample windows' span; windows starting in one block of a
#: recording or asset are drawn together (overlapping windows are strongly correlated)
BLOCK_SAMPLES = 4096
DIRECTIONS = {"recall_at_fpr": "max", "macro_f1": "max"}


def carve(windows: WindowSet) -> tuple[WindowSet, WindowSet]:
    """(windows a model may fit, reference windows) of a training portion."""
    length = windows.windows.shape[1]
    fit = np.zeros(len(windows), dtype=bool)
    ref = np.zeros(len(windows), dtype=bool)
    for source in np.unique(windows.sources):
        rows = windows.sources == source
        end = int(windows.starts[rows].max()) + length  # end of this recording's train portion
        boundary = int(end * (1 - REFERENCE_SHARE))
        fit |= rows & (windows.starts + length <= boundary)
        ref |= rows & (windows.starts >= boundary)
    return windows.subset(fit), windows.subset(ref)


def slice_of(windows: WindowSet, source: str) -> EvaluationSet:
    return EvaluationSet(
        windows,
        {
            "source": source,
            "windows": len(windows),
            "groups": len(np.unique(windows.sources)),
            "blocks": len(np.unique(blocks(windows))),
        },
    )


def blocks(windows: WindowSet) -> np.ndarray:
    """Bootstrap group of every window: its recording (or asset) and the block its start is in."""
    block = (windows.starts // BLOCK_SAMPLES).astype(str)
    return np.char.add(np.char.add(windows.sources.astype(str), "#"), block)


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in truth or prediction (numpy: the bootstrap's loop)."""
    scores = []
    for label in np.union1d(true, pred):
        t, p = true == label, pred == label
        denominator = t.sum() + p.sum()
        scores.append(2 * (t & p).sum() / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def _metrics(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    fault = columns["fault"]
    return {
        "recall_at_fpr": float(columns["flagged"][fault].mean()) if fault.any() else None,
        "macro_f1": macro_f1(columns["true"], columns["pred"]) if fault.size else None,
    }


def item_scores(bundle: ModelBundle, evaluation: EvaluationSet) -> ItemScores:
    """Flag and predicted class of every window of the slice, grouped in blocks of a recording
    or asset."""
    windows: WindowSet = evaluation.data
    scores, proba = bundle.score_windows(windows.windows, windows.rpm)  # type: ignore[attr-defined]
    predicted = np.asarray(bundle.labels)[proba.argmax(axis=1)]  # type: ignore[attr-defined]
    return ItemScores(
        groups=blocks(windows),
        columns={
            "fault": windows.is_fault,
            "flagged": scores > bundle.threshold,  # type: ignore[attr-defined]
            "true": windows.labels.astype(str),
            "pred": predicted.astype(str),
        },
        metrics=_metrics,
        directions=dict(DIRECTIONS),  # type: ignore[arg-type]
        strata=windows.labels.astype(str),
    )


#: consecutive labelled predictions of one asset drawn together by the live comparison's bootstrap
LIVE_BLOCK = 4


def live_item_scores(
    records: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
) -> ItemScores | None:
    """Flag and class of archived labelled windows against their inspected class. Groups:
    each asset's predictions in time order, in blocks of `LIVE_BLOCK` (consecutive windows of
    one machine are correlated; whole assets would give about one group per class, the
    zero-width interval the reference slice once had)."""
    from machine_health.domains.vibration.data import NORMAL

    keep = [
        i for i, (r, o) in enumerate(zip(records, outputs, strict=True))
        if r.get("label") is not None and "is_anomaly" in o
    ]  # fmt: skip
    if not keep:
        return None
    keep.sort(key=lambda i: (str(records[i].get("asset_id")), str(records[i].get("created_at"))))
    groups, seen = [], {}
    for i in keep:
        asset = str(records[i].get("asset_id"))
        n = seen[asset] = seen.get(asset, -1) + 1
        groups.append(f"{asset}#{n // LIVE_BLOCK}")
    true = np.asarray([str(records[i]["label"]) for i in keep])
    return ItemScores(
        groups=np.asarray(groups),
        columns={
            "fault": true != NORMAL,
            "flagged": np.asarray([bool(outputs[i]["is_anomaly"]) for i in keep]),
            "true": true,
            "pred": np.asarray([str(outputs[i].get("fault_class", "")) for i in keep]),
        },
        metrics=_metrics,
        directions=dict(DIRECTIONS),  # type: ignore[arg-type]
        strata=true,
    )
