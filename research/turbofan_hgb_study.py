"""Validation-only studies of hgb's settings on FD001 (reads the TRAINING file only).

`python -m research.turbofan_hgb_study [--data-dir ../shared/data] [--folds 5] [--study scales]`

Unit-wise K-fold over the 100 training units: each fold's units are held out, the transform and
hgb (trees chosen on that fold, as `fit_hgb` does) are fitted on the others, and the held-out
units' test-like cuts (`training.validation_cuts`) are scored against the uncapped RUL. Every unit
is scored exactly once per variant, so the variants are compared on the same 100 units rather
than on the 20 of one split. A study (`--study`, see `STUDIES`) is a set of variants, each a
set of `FitConfig` fields overriding the defaults. The test file is never opened.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from machine_health.config import Settings
from machine_health.domains.turbofan.data import find_file, read_history, resolve_cmapss_dir
from machine_health.domains.turbofan.features import FeatureTransform
from machine_health.domains.turbofan.models import FitConfig, fit_hgb, predict_member
from machine_health.domains.turbofan.training import (
    cut_scores,
    fit_feature_transform,
    learn_weights,
    validation_cuts,
    windows_and_targets,
)


@dataclass
class Fold:
    """One held-out fold: the transform and windows fitted without it, and its test-like cuts."""

    transform: FeatureTransform
    train_xy: tuple[np.ndarray, np.ndarray]
    val_xy: tuple[np.ndarray, np.ndarray]
    cuts: np.ndarray  # windows ending at the held-out units' test-like cuts
    rul: np.ndarray  # their uncapped true RUL


def unit_folds(settings: Settings, train: pd.DataFrame, folds: int, seed: int) -> Iterator[Fold]:
    """K folds by unit over the training file (the same folds for the same seed)."""
    units = np.sort(train["unit"].unique())
    for held in np.array_split(np.random.default_rng(seed).permutation(units), folds):
        val_part = train[train["unit"].isin(held)].reset_index(drop=True)
        fit_part = train[~train["unit"].isin(held)].reset_index(drop=True)
        transform = fit_feature_transform(settings, fit_part, FitConfig())
        mask, rul = validation_cuts(val_part)
        yield Fold(
            transform, windows_and_targets(transform, fit_part),
            windows_and_targets(transform, val_part),
            transform.windows(val_part, every_cycle=True, keep=mask), rul,
        )  # fmt: skip


#: hgb's tree settings before the `trees` studies changed the defaults: the studies run with
#: them keep them, so each still repeats its recorded figures
FIRST_TREES: dict[str, Any] = {
    "hgb_max_leaf_nodes": 31, "hgb_min_samples_leaf": 40, "hgb_max_features": 1.0,
}  # fmt: skip


def on_first_trees(variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {**FIRST_TREES, **overrides} for name, overrides in variants.items()}


#: a variant key that is not a `FitConfig` field: the mean of this many hgb fits, seeds
#: s + 1000 k (as the ensemble seeds its repeated members)
SEEDS = "seeds"
#: a variant key that is a `Settings` field: the RUL cap of the training targets (the held-out
#: cuts are still scored against the uncapped RUL)
CAP = "rul_cap"

#: study name -> variant name -> the `FitConfig` fields the variant overrides
STUDIES: dict[str, dict[str, dict[str, Any]]] = {
    # the feature scales (every variant with the default tree cap)
    "scales": on_first_trees(
        {
            "window only": {"hgb_scales": ()},
            "last 10, 30": {"hgb_scales": (10, 30)},
            "last 5, 15, 30": {"hgb_scales": (5, 15, 30)},
            "last 10, 30, 60": {"hgb_scales": (10, 30, 60)},
        }
    ),
    # the tree cap (the trees are still chosen on the held-out fold, up to the cap)
    "max-iter": on_first_trees(
        {
            f"{n} trees max": {"hgb_scales": (10, 30, 60), "hgb_max_iter": n}
            for n in (400, 800, 1200)
        }
    ),
    # the trees' own settings, one change at a time from FIRST_TREES (with lr 0.08 and l2 1,
    # still the defaults); a halved learning rate gets twice the tree cap
    "trees": on_first_trees(
        {
            "before": {},
            "lr 0.04, 800 max": {"hgb_learning_rate": 0.04, "hgb_max_iter": 800},
            "15 leaves": {"hgb_max_leaf_nodes": 15},
            "63 leaves": {"hgb_max_leaf_nodes": 63},
            "200 per leaf": {"hgb_min_samples_leaf": 200},
            "l2 10": {"hgb_l2_regularization": 10.0},
            "features 0.5": {"hgb_max_features": 0.5},
        }
    ),
    # after "trees": the three changes that beat "before" (15 leaves, 200 per leaf,
    # features 0.5), combined, and fewer leaves still; simpler trees may want more of them
    "trees-2": on_first_trees(
        {
            "15 leaves": {"hgb_max_leaf_nodes": 15},
            "7 leaves": {"hgb_max_leaf_nodes": 7},
            "15 leaves, 200 per leaf": {"hgb_max_leaf_nodes": 15, "hgb_min_samples_leaf": 200},
            "15 leaves, features 0.5": {"hgb_max_leaf_nodes": 15, "hgb_max_features": 0.5},
            "15 leaves, 200 per leaf, features 0.5": {
                "hgb_max_leaf_nodes": 15,
                "hgb_min_samples_leaf": 200,
                "hgb_max_features": 0.5,
            },
            "15 leaves, 200 per leaf, 800 max": {
                "hgb_max_leaf_nodes": 15,
                "hgb_min_samples_leaf": 200,
                "hgb_max_iter": 800,
            },
        }
    ),
    # after "trees-2", from the defaults it chose: the mean of several seeds (the feature
    # subsampling makes hgb depend on its seed, so their mean has less variance), coarser
    # trees and fewer features per split still, more feature scales, a slower learning rate
    "bagging": {
        "default": {},
        "3 seeds": {SEEDS: 3},
        "5 seeds": {SEEDS: 5},
        "400 per leaf": {"hgb_min_samples_leaf": 400},
        "features 0.3": {"hgb_max_features": 0.3},
        "features 0.3, 3 seeds": {"hgb_max_features": 0.3, SEEDS: 3},
        "last 5, 10, 30, 60": {"hgb_scales": (5, 10, 30, 60)},
        "lr 0.04, 800 max": {"hgb_learning_rate": 0.04, "hgb_max_iter": 800},
    },
    # the RUL cap of the targets (a setting shared by every model; 125 was chosen for the CNN
    # at a shorter window): hgb alone, with the defaults
    "cap": {f"cap {cap}": {CAP: cap} for cap in (115, 120, 125, 130, 135)},
}


def study_parser() -> argparse.ArgumentParser:
    """The options every validation study takes: data, subset, folds, seed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def report(
    variants: dict[str, dict[str, Any]],
    preds: dict[str, list[np.ndarray]],
    truth: list[np.ndarray],
    trees: dict[str, list[int]],
    seconds: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """Print and return every variant's out-of-fold scores, per-fold figures, trees and time."""
    y = np.concatenate(truth)
    out: dict[str, dict[str, Any]] = {}
    for name in variants:
        per_fold = [cut_scores(t, q) for t, q in zip(truth, preds[name], strict=True)]
        fit_seconds = seconds[name] / len(truth)
        out[name] = {
            **cut_scores(y, np.concatenate(preds[name])),
            "per_fold_rmse": [f["val_rmse_last"] for f in per_fold],
            "per_fold_phm": [f["val_phm_last"] for f in per_fold],
            "trees": trees[name],
            "fit_seconds": fit_seconds,
        }
        print(f"{name:16s} val_rmse_last {out[name]['val_rmse_last']:.3f} "
              f"val_phm_last {out[name]['val_phm_last']:.0f} folds "
              f"{' '.join(f'{r:.2f}' for r in out[name]['per_fold_rmse'])} trees "
              f"{' '.join(map(str, trees[name]))} ({fit_seconds:.0f} s/fit)",
              flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = study_parser()
    parser.add_argument("--study", choices=sorted(STUDIES), default="scales")
    parser.add_argument(
        "--cnns", type=Path, default=None,
        help="out-of-fold CNN predictions saved by research.turbofan_ensemble_study (same folds):"
        " also score each variant inside the ensemble with them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="save the variants' predictions")
    parser.add_argument(
        "--rescore", type=Path, default=None,
        help="fit nothing: score the predictions a run saved with --out (with --cnns)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    variants = STUDIES[args.study]
    settings = Settings(_env_file=None, data_dir=args.data_dir)
    if args.rescore is not None:
        saved = np.load(args.rescore)
        folds = sum(1 for key in saved.files if key.startswith("truth_"))
        truth = [saved[f"truth_{j}"] for j in range(folds)]
        preds = {name: [saved[f"{name}_{j}"] for j in range(folds)] for name in variants}
        out = {"ensemble": with_cnns(args.cnns, preds, truth, settings.rul_cap)}
        print(json.dumps(out))
        return 0
    train = read_history(find_file(resolve_cmapss_dir(args.data_dir), f"train_{args.subset}"))
    base = FitConfig()
    preds: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    trees: dict[str, list[int]] = {name: [] for name in variants}
    truth: list[np.ndarray] = []
    seconds = dict.fromkeys(variants, 0.0)
    # one set of folds per RUL cap the variants use (the same units, other targets)
    caps = sorted({overrides.get(CAP, settings.rul_cap) for overrides in variants.values()})
    fold_sets = [
        unit_folds(settings.model_copy(update={CAP: cap}), train, args.folds, args.seed)
        for cap in caps
    ]
    for i, same_units in enumerate(zip(*fold_sets, strict=True)):
        by_cap = dict(zip(caps, same_units, strict=True))
        truth.append(same_units[0].rul)
        for name, overrides in variants.items():
            fold = by_cap[overrides.get(CAP, settings.rul_cap)]
            fields = {k: v for k, v in overrides.items() if k not in (SEEDS, CAP)}
            started = time.perf_counter()
            members = [
                fit_hgb(fold.train_xy, fold.val_xy, seed=args.seed + 1000 * k,
                        config=replace(base, **fields))
                for k in range(overrides.get(SEEDS, 1))
            ]  # fmt: skip
            took = time.perf_counter() - started
            seconds[name] += took
            scaled = np.mean([predict_member(m, fold.cuts) for m in members], axis=0)
            preds[name].append(scaled * fold.transform.cap)
            trees[name].append(int(np.mean([m.estimator.n_iter_ for m in members])))
            score = cut_scores(fold.rul, preds[name][-1])["val_rmse_last"]
            print(f"fold {i} {name:16s} val_rmse_last {score:.3f} trees {trees[name][-1]} "
                  f"({took:.0f} s)", flush=True)  # fmt: skip
    out = report(variants, preds, truth, trees, seconds)
    if args.out is not None:
        saved = {f"{name}_{j}": p for name, ps in preds.items() for j, p in enumerate(ps)}
        np.savez(args.out, **{f"truth_{j}": t for j, t in enumerate(truth)}, **saved)
    if args.cnns is not None:
        out = {"hgb": out, "ensemble": with_cnns(args.cnns, preds, truth, settings.rul_cap)}
    print(json.dumps(out))
    return 0


def with_cnns(
    path: Path, preds: dict[str, list[np.ndarray]], truth: list[np.ndarray], cap: float
) -> dict[str, dict[str, Any]]:
    """Each variant as the served ensemble's hgb: with the saved CNNs (`cnn#k_<fold>`), weights
    learned by `learn_weights` on the other folds (cross-fitted) and applied to the held-out one."""
    saved = np.load(path)
    for j, t in enumerate(truth):  # the same folds and cuts, or the comparison means nothing
        if not np.array_equal(saved[f"truth_{j}"], t):
            raise SystemExit(f"{path}: fold {j} holds other cuts than this run's")
    cnns = sorted({key.rsplit("_", 1)[0] for key in saved.files if key.startswith("cnn#")})
    names = ["cnn"] * len(cnns) + ["hgb"]
    y = np.concatenate(truth)
    out: dict[str, dict[str, Any]] = {}
    for variant, per_fold in preds.items():
        members = [[saved[f"{c}_{j}"] / cap for j in range(len(truth))] for c in cnns]
        members.append([p / cap for p in per_fold])
        crossed = []
        for j in range(len(truth)):
            rest = [k for k in range(len(truth)) if k != j]
            weights = learn_weights(
                names, [np.concatenate([m[k] for k in rest]) for m in members],
                np.concatenate([truth[k] for k in rest]), cap,
            )  # fmt: skip
            crossed.append(np.average([m[j] for m in members], axis=0, weights=weights) * cap)
        folds = [cut_scores(t, q)["val_rmse_last"] for t, q in zip(truth, crossed, strict=True)]
        out[variant] = {**cut_scores(y, np.concatenate(crossed)), "per_fold_rmse": folds}
        print(f"{len(cnns)} CNNs + {variant:16s} cross-fitted val_rmse_last "
              f"{out[variant]['val_rmse_last']:.3f} val_phm_last "
              f"{out[variant]['val_phm_last']:.0f} folds {' '.join(f'{r:.2f}' for r in folds)}",
              flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    raise SystemExit(main())
