"""The turbofan gate slices: a frozen reference carve-out of the training units, and item scores.

- reference: every `REFERENCE_EVERY`-th unit of the base training file (unit id divisible by
  it: 20 of FD001's 100 units), run to failure. No training set holds them (`fit_units`, used
  by the retrain's training set and by `workflow.train_and_register`), so neither champion nor
  challenger fitted them;
- items: test-like cuts of a run-to-failure history (at least 30 cycles of history, true RUL at
  most 150, every `CUT_EVERY`-th cycle), scored against the uncapped true RUL; the bootstrap
  draws whole units (the cuts of one unit are correlated);
- metrics: rmse and phm_score (PHM08 per 100 cuts, so a slice of any size reads like the test
  file's sum over 100 units).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from machine_health.domains.base import EvaluationSet, ItemScores, ModelBundle
from machine_health.domains.turbofan.metrics import phm08_score

REFERENCE_EVERY = 5
CUT_EVERY = 10
DIRECTIONS = {"rmse": "min", "phm_score": "min"}


def is_reference(units: pd.Series) -> np.ndarray:
    return (units.to_numpy().astype(int) % REFERENCE_EVERY) == 0


def fit_units(train: pd.DataFrame) -> pd.DataFrame:
    """The base training histories a model may fit: all but the reference units."""
    return train[~is_reference(train["unit"])].reset_index(drop=True)


def reference_units(train: pd.DataFrame) -> pd.DataFrame:
    return train[is_reference(train["unit"])].reset_index(drop=True)


def slice_of(histories: pd.DataFrame, source: str) -> EvaluationSet:
    """Run-to-failure histories as a gate slice (the cuts are made when scoring)."""
    histories = histories.sort_values(["unit", "cycle"], kind="stable").reset_index(drop=True)
    units = int(histories["unit"].nunique()) if len(histories) else 0
    return EvaluationSet(histories, {"source": source, "units": units})


def _metrics(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    true, pred = columns["true"], columns["pred"]
    if true.size == 0:
        return {"rmse": None, "phm_score": None}
    return {
        "rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "phm_score": 100 * phm08_score(true, pred) / true.size,
    }


def item_scores(bundle: ModelBundle, evaluation: EvaluationSet) -> ItemScores:
    """Predicted vs true RUL at the test-like cuts of every history of the slice."""
    from machine_health.domains.turbofan.training import validation_cuts

    frame: pd.DataFrame = evaluation.data
    mask, _ = validation_cuts(frame)
    order = frame.groupby("unit").cumcount().to_numpy() + 1
    mask &= order % CUT_EVERY == 0
    last = frame.groupby("unit")["cycle"].transform("max").to_numpy()
    true = (last - frame["cycle"].to_numpy())[mask].astype("float64")
    if mask.any():
        windows = bundle.transform.windows(frame, every_cycle=True, keep=mask)  # type: ignore[attr-defined]
        pred = np.clip(bundle.predict_windows(windows), 0.0, None)  # type: ignore[attr-defined]
    else:
        pred = np.empty(0)
    return ItemScores(
        groups=frame["unit"].to_numpy()[mask].astype(str),
        columns={"true": true, "pred": np.asarray(pred, dtype="float64")},
        metrics=_metrics,
        directions=dict(DIRECTIONS),  # type: ignore[arg-type]
    )


def live_item_scores(
    records: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
) -> ItemScores | None:
    """Predicted vs true RUL of the archived labelled cycles whose true RUL is at most
    `TEST_LIKE_MAX_RUL` (as the reference slice's cuts), grouped by unit."""
    from machine_health.domains.turbofan.training import TEST_LIKE_MAX_RUL

    keep = [
        i for i, (r, o) in enumerate(zip(records, outputs, strict=True))
        if r.get("label") is not None and "rul" in o and float(r["label"]) <= TEST_LIKE_MAX_RUL
    ]  # fmt: skip
    if not keep:
        return None
    return ItemScores(
        groups=np.asarray([str(records[i].get("asset_id")) for i in keep]),
        columns={
            "true": np.asarray([float(records[i]["label"]) for i in keep]),
            "pred": np.clip([float(outputs[i]["rul"]) for i in keep], 0.0, None),
        },
        metrics=_metrics,
        directions=dict(DIRECTIONS),  # type: ignore[arg-type]
    )
