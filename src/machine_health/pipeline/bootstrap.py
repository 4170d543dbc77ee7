"""The gate's statistics: a paired bootstrap of challenger - champion over a slice's groups.

Champion and challenger are scored on the SAME items (`ItemScores` from `Domain.item_scores`);
one resample draws the slice's groups (turbofan units, blocks of a vibration recording or
asset, acoustic clips) with replacement, within their stratum (class balance stays that of the
slice), and recomputes each metric of both models on those items: the spread of the difference
is the slice's sampling noise, paired so that what both models get right or wrong alike
cancels.

`judge` turns one metric's resampled differences into a verdict (the rule is stated in
`pipeline.evaluate`). numpy only, fixed seed: the same scores always give the same report.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from machine_health.domains.base import ItemScores

#: resamples per slice; the 5 % / 95 % quantiles of 1000 are stable to ~1 % of the interval.
RESAMPLES = 1000
#: one-sided confidence of each bound the gate uses (the recorded interval is [5 %, 95 %]).
CONFIDENCE = 0.95
SEED = 0


def _group_index(scores: ItemScores) -> tuple[list[np.ndarray], np.ndarray]:
    """Item indices of every group, and each group's stratum."""
    groups = np.asarray(scores.groups).astype(str)
    strata = (
        np.zeros(len(groups), dtype=str) if scores.strata is None else np.asarray(scores.strata)
    ).astype(str)
    names, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1]
    return np.split(order, bounds), strata[first]


def _subset(columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in columns.items()}


def paired_differences(
    champion: ItemScores, challenger: ItemScores, *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[dict[str, np.ndarray], int]:
    """(metric -> challenger - champion on each resample (NaN where undefined), n groups)."""
    if len(champion.groups) != len(challenger.groups):
        raise ValueError("champion and challenger were not scored on the same items")
    members, strata = _group_index(challenger)
    by_stratum = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {name: [] for name in challenger.directions}
    for _ in range(resamples):
        drawn = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in by_stratum])
        index = np.concatenate([members[g] for g in drawn])
        new = challenger.metrics(_subset(challenger.columns, index))
        old = champion.metrics(_subset(champion.columns, index))
        for name in out:
            a, b = new.get(name), old.get(name)
            out[name].append(math.nan if a is None or b is None else float(a) - float(b))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}, len(members)


SliceKind = Literal["reference", "baseline", "field"]
#: slices judged with the tolerance: the reference slice against the champion and against the
#: lineage's baseline version (the same frozen items: the tolerance is a budget, not a step)
TOLERANT: tuple[SliceKind, ...] = ("reference", "baseline")


def judge(
    kind: SliceKind,
    direction: Literal["min", "max"],
    champion: float,
    challenger: float,
    differences: np.ndarray,
    tolerance: float,
    n_groups: int,
) -> dict[str, Any]:
    """One slice and metric: values, difference, its interval, the allowed loss and the verdict.

    `loss` = how much worse the challenger is (positive: worse), whatever the metric's direction.
    """
    sign = 1.0 if direction == "min" else -1.0
    difference = challenger - champion
    allowed = tolerance * abs(champion) if kind in TOLERANT else 0.0
    finite = differences[np.isfinite(differences)]
    row: dict[str, Any] = {
        "champion": champion, "challenger": challenger, "difference": difference,
        "better": direction, "allowed_loss": allowed, "n_groups": n_groups,
        "resamples": int(finite.size),
    }  # fmt: skip
    if finite.size < 0.5 * differences.size or not math.isfinite(difference):
        if kind == "field":  # e.g. one class only in most resamples: too little to judge
            return row | {"interval": None, "passed": True,
                          "verdict": "not enough field data: the metric is undefined on most "
                                     "resamples"}  # fmt: skip
        undefined = "undefined: the metric cannot be computed on this slice's resamples"
        return row | {"interval": None, "passed": False, "verdict": undefined}
    alpha = 1.0 - CONFIDENCE
    low, high = (float(q) for q in np.quantile(finite, [alpha, 1.0 - alpha]))
    # the loss's bounds: the sign turns "challenger - champion" into "how much worse"
    loss_low, loss_high = sorted((sign * low, sign * high))
    row["interval"] = [low, high]
    width = f"{CONFIDENCE:.0%} bounds of the difference [{low:.4g}, {high:.4g}], {n_groups} groups"
    if loss_low > allowed:
        worse = {"reference": "worse beyond the tolerance",
                 "baseline": "worse than the baseline beyond the tolerance (losses accumulated "
                             "over promotions)"}.get(kind, "significantly worse")  # fmt: skip
        return row | {"passed": False, "verdict": f"{worse} ({width})"}
    if kind in TOLERANT:
        if loss_high <= allowed:
            return row | {"passed": True, "verdict": f"not worse beyond the tolerance ({width})"}
        if loss_low > 0:  # worse with 95 % confidence, but not shown beyond the tolerance
            return row | {"passed": True, "verdict": f"inconclusive, significantly worse but the "
                          f"interval spans the tolerance ({width})"}  # fmt: skip
        return row | {"passed": True, "verdict": f"inconclusive, interval spans the tolerance: "
                      f"too few groups or too noisy to tell ({width})"}  # fmt: skip
    if loss_high < 0:
        return row | {"passed": True, "verdict": f"significantly better ({width})"}
    return row | {"passed": True, "verdict": f"no significant difference ({width})"}
