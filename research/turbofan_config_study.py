"""The served FD001 configuration, one factor at a time, by 5-fold cross-validation by unit
(reads the TRAINING file only; the test file is never opened).

    nice -n 10 .venv/bin/python -m research.turbofan_config_study --model mlps \\
        [--data-dir ../shared/data] [--folds 5] [--seed 0] [--variants ...]

The served configuration: the `ensemble` (hgb + three MLPs, weights learned on validation),
window 100, RUL cap 125, Huber loss, smoothing 0.15, the quantised sensor dropped
(`max_levels` 2), members refitted on every training unit (`FitConfig`, `Settings`). Each
variant (`VARIANTS`) changes one of these. The folds are those of `research.turbofan_hgb_study`
(`unit_folds`: the 100 training units permuted with `--seed`, split in `--folds`), the same for
every variant: each fold's units are held out, and `train_bundle` (the served code path: its
own 80/20 split by unit of the remaining units for early stopping and the weights, then the
refit) trains on the others with the variant's settings; the held-out units' test-like cuts
(`training.validation_cuts`: every cycle with >= 30 cycles of history and a true RUL <= 150)
are scored against the uncapped RUL. Every unit is scored once per variant.

Reported per variant: out-of-fold RMSE and PHM08 (per 100 cuts, `cut_scores`) over all cuts,
per-fold figures, and a paired bootstrap 95 % interval (1000 resamples of the 100 held-out
units, seed 0, the same resamples for every variant) of the variant minus the served
configuration. One training seed per variant: "served, seed 1" shows how far the seed alone
moves the figures. The out-of-fold predictions are saved after every fold (`--out`), and
`--rescore` reports a saved run without training.

Members (`--model`): the committed run trains `mlps`, the served ensemble's three MLPs without
its hgb member (which the served fits weight 0.05-0.2; its 400 boosted trees, fitted, staged
and refitted, cost most of the ensemble's training time, too much for 11 variants x 5 folds on
two shared cores); `--model ensemble` runs the full served ensemble. Variants run one after the
other in `VARIANTS`' order (a stopped run keeps whole variants).

Writes docs/benchmarks/turbofan_config_study.json (with the provenance block).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.provenance import provenance
from machine_health.config import Settings
from machine_health.domains.turbofan import models
from machine_health.domains.turbofan.data import find_file, read_history, resolve_cmapss_dir
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.training import cut_scores, train_bundle, validation_cuts

logger = logging.getLogger("research.turbofan_config_study")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "turbofan_config_study.json"
RESAMPLES = 1000
SERVED = "served"
#: variant keys that are `Settings` fields (the rest are `FitConfig` fields), and the seed
SETTINGS_KEYS = ("rul_cap", "turbofan_window")
SEED = "seed"

#: variant name -> what it changes from the served configuration
VARIANTS: dict[str, dict[str, Any]] = {
    SERVED: {},
    "cap 130": {"rul_cap": 130},
    "cap 120": {"rul_cap": 120},
    "loss mse": {"loss": "mse"},
    "window 50": {"turbofan_window": 50},
    "refit off": {"refit_all": False},
    "smoothing off": {"smoothing": 0.0},
    "quantised sensor kept": {"max_levels": 0},
    "window 30": {"turbofan_window": 30},
    "cap 140": {"rul_cap": 140},
    "served, seed 1": {SEED: 1},
}
#: `--model mlps`: the served ensemble without its hgb member, i.e. its three MLPs (seeds s,
#: s + 1000, s + 2000, equal weights): the members that carry 0.8-0.95 of the served weights
#: and the ones the loss applies to, at a fraction of hgb's training time
MLPS = "mlps"
models.ENSEMBLES.setdefault(MLPS, ("mlp", "mlp", "mlp"))


def held_out_units(train: pd.DataFrame, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out units of each fold: `research.turbofan_hgb_study.unit_folds`' folds."""
    units = np.sort(train["unit"].unique())
    return np.array_split(np.random.default_rng(seed).permutation(units), folds)


def run(
    settings: Settings,
    train: pd.DataFrame,
    variants: dict[str, dict[str, Any]],
    *,
    model: str,
    folds: int,
    seed: int,
    out: Path,
) -> dict[str, Any]:
    """Train every variant on every fold, variant after variant (a stopped run keeps whole
    variants); save the out-of-fold predictions after each fit."""
    saved: dict[str, np.ndarray] = {}
    if out.exists():  # resume: folds already saved for a variant are not trained again
        saved = dict(np.load(out))
    seconds: dict[str, float] = dict.fromkeys(variants, 0.0)
    parts = []
    for j, held in enumerate(held_out_units(train, folds, seed)):
        val_part = train[train["unit"].isin(held)].reset_index(drop=True)
        fit_part = train[~train["unit"].isin(held)].reset_index(drop=True)
        mask, rul = validation_cuts(val_part)
        saved[f"truth_{j}"] = rul
        saved[f"unit_{j}"] = val_part["unit"].to_numpy()[mask]
        parts.append((fit_part, val_part, mask, rul))
    for name, overrides in variants.items():
        fields = {k: v for k, v in overrides.items() if k not in (*SETTINGS_KEYS, SEED)}
        updates = {k: v for k, v in overrides.items() if k in SETTINGS_KEYS}
        for j, (fit_part, val_part, mask, rul) in enumerate(parts):
            if f"{name}_{j}" in saved:
                continue
            started = time.perf_counter()
            fit = train_bundle(
                settings.model_copy(update=updates), fit_part, model_name=model,
                seed=overrides.get(SEED, seed), config=replace(FitConfig(), **fields),
            )  # fmt: skip
            windows = fit.bundle.transform.windows(val_part, every_cycle=True, keep=mask)
            saved[f"{name}_{j}"] = fit.bundle.predict_windows(windows)
            took = time.perf_counter() - started
            seconds[name] += took
            score = cut_scores(rul, saved[f"{name}_{j}"])
            logger.info(
                "fold %d %-22s rmse %.2f phm %.0f (%.0f s; inner val rmse %.2f, weights %s)",
                j, name, score["val_rmse_last"], score["val_phm_last"], took, fit.val_rmse_last,
                fit.weights,
            )  # fmt: skip
            np.savez(out, **saved)
    result = report(saved, variants, folds, settings.rul_cap)
    for name in variants:
        result["variants"][name]["train_seconds_per_fold"] = seconds[name] / folds
    return result


def _unit_sums(
    units: np.ndarray, truth: np.ndarray, pred: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Per unit of `ids`: (squared error sum, PHM08 term sum, cuts) over its cuts."""
    pred = np.clip(pred, 0.0, None)
    d = pred - truth
    phm = np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))
    index = np.searchsorted(ids, units)
    return np.stack([
        np.bincount(index, weights=d**2, minlength=ids.size),
        np.bincount(index, weights=phm, minlength=ids.size),
        np.bincount(index, minlength=ids.size).astype("float64"),
    ])  # fmt: skip


def report(
    saved: dict[str, np.ndarray], variants: dict[str, Any], folds: int, cap: int
) -> dict[str, Any]:
    """Out-of-fold scores of every variant and paired bootstrap intervals against the served."""
    done = [n for n in variants if all(f"{n}_{j}" in saved for j in range(folds))]
    truth = np.concatenate([saved[f"truth_{j}"] for j in range(folds)])
    units = np.concatenate([saved[f"unit_{j}"] for j in range(folds)])
    ids = np.unique(units)
    draws = np.random.default_rng(0).integers(0, ids.size, size=(RESAMPLES, ids.size))
    weights = np.stack([np.bincount(d, minlength=ids.size) for d in draws]).astype("float64")
    boot: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, Any] = {}
    for name in done:
        per_fold = [saved[f"{name}_{j}"] for j in range(folds)]
        sums = _unit_sums(units, truth, np.concatenate(per_fold), ids)
        sse, phm, cuts = weights @ sums[0], weights @ sums[1], weights @ sums[2]
        boot[name] = {"rmse": np.sqrt(sse / cuts), "phm08": 100 * phm / cuts}
        each = [cut_scores(saved[f"truth_{j}"], p) for j, p in enumerate(per_fold)]
        whole = cut_scores(truth, np.concatenate(per_fold))
        out[name] = {
            "changes": dict(variants[name]),
            "rmse": whole["val_rmse_last"],
            "phm08_per_100_cuts": whole["val_phm_last"],
            "rmse_ci95": _interval(boot[name]["rmse"]),
            "phm08_ci95": _interval(boot[name]["phm08"]),
            "per_fold_rmse": [e["val_rmse_last"] for e in each],
            "per_fold_phm08": [e["val_phm_last"] for e in each],
        }
    if SERVED in boot:
        for name in done:
            if name == SERVED:
                continue
            diff = {m: boot[name][m] - boot[SERVED][m] for m in ("rmse", "phm08")}
            out[name]["minus_served"] = {
                "rmse": out[name]["rmse"] - out[SERVED]["rmse"],
                "rmse_ci95": _interval(diff["rmse"]),
                "phm08": out[name]["phm08_per_100_cuts"] - out[SERVED]["phm08_per_100_cuts"],
                "phm08_ci95": _interval(diff["phm08"]),
                "share_of_resamples_better": {m: float(np.mean(diff[m] < 0)) for m in diff},
            }
    caps = {n: variants[n].get("rul_cap", cap) for n in done if set(variants[n]) <= {"rul_cap"}}
    cap_choice: dict[str, Any] = {}
    if caps:
        best = min(caps, key=lambda n: out[n]["rmse"])
        wins = np.argmin(np.stack([boot[n]["rmse"] for n in caps]), axis=0)
        cap_choice = {
            "by_rmse": caps[best],
            "by_phm08": caps[min(caps, key=lambda n: out[n]["phm08_per_100_cuts"])],
            "share_of_resamples_each_cap_is_best_rmse": {
                str(caps[n]): float(np.mean(wins == i)) for i, n in enumerate(caps)
            },
        }
    return {
        "folds": folds,
        "held_out_units": int(ids.size),
        "cuts": int(truth.size),
        "variants": out,
        "cap_choice_on_validation": cap_choice,
    }


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.turbofan_config_study")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", default="ensemble", help=f"a turbofan model, or {MLPS} (see MLPS)"
    )
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
        help="which variants to train (default: all; the served one is always included)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("turbofan_config_study.npz"))
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--rescore", action="store_true", help="train nothing: report --out")
    args = parser.parse_args(argv)
    variants = {n: VARIANTS[n] for n in VARIANTS if n == SERVED or n in args.variants}
    settings = Settings(_env_file=None, data_dir=args.data_dir)
    path = find_file(resolve_cmapss_dir(args.data_dir), f"train_{args.subset}")
    started = time.monotonic()
    if args.rescore:
        result = report(dict(np.load(args.out)), variants, args.folds, settings.rul_cap)
    else:
        train = read_history(path)
        result = run(
            settings, train, variants, model=args.model, folds=args.folds, seed=args.seed,
            out=args.out,
        )  # fmt: skip
    block = provenance(
        data=[path],
        subset=args.subset,
        cap=settings.rul_cap,
        window=settings.turbofan_window,
        model=args.model,
        folds=args.folds,
        fold_seed=args.seed,
        test_file_read=False,
        served_fit_config=asdict(FitConfig()),
    )
    result = {
        "provenance": block,
        "wall_seconds": round(time.monotonic() - started, 1),
        **result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["variants"].items():
        diff = row.get("minus_served")
        logger.info(
            "%-22s rmse %.2f [%.2f, %.2f] phm08 %.0f%s", name, row["rmse"], *row["rmse_ci95"],
            row["phm08_per_100_cuts"],
            "" if diff is None else
            f"  minus served: rmse {diff['rmse']:+.2f} [{diff['rmse_ci95'][0]:+.2f}, "
            f"{diff['rmse_ci95'][1]:+.2f}] phm08 {diff['phm08']:+.0f} "
            f"[{diff['phm08_ci95'][0]:+.0f}, {diff['phm08_ci95'][1]:+.0f}]",
        )  # fmt: skip
    logger.info("cap chosen on validation: %s", result["cap_choice_on_validation"])
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    raise SystemExit(main())
