"""Turbofan benchmark: every RUL model on C-MAPSS FD001 and FD002, mean over 3 seeds.

    .venv/bin/python -m bench turbofan            # FD001 and FD002
    .venv/bin/python -m bench.turbofan FD001      # one subset

Same function and JSON as `machine-health benchmark turbofan --subset FDxxx --seeds 3`; writes
docs/benchmarks/turbofan_<subset>.json and logs one MLflow run per model and seed.

The served models' training set (`--fit-units`): `train_and_register` (version 1) and the
retrain fit every training unit but the gate's reference units (`reference.fit_units`: id
divisible by 5, 20 of FD001's 100). `--fit-units reference-excluded all` trains the given
`--models` on each in the same run, same seeds, scored by the same code (`evaluate_bundle`: the
last cycle of each test unit against the uncapped true RUL), and adds bootstrap 95 % intervals
over the test units (1000 resamples of units, seed 0; the same resamples for every
configuration, so the difference's interval is paired):

    .venv/bin/python -m bench.turbofan FD001 --models ensemble --fit-units reference-excluded all

writes docs/benchmarks/turbofan_<subset>_fit_units.json (no MLflow runs).

Every JSON carries a "provenance" block (`bench.provenance`): commit, date, command, host, the
sha256 of the three C-MAPSS files read, the RUL cap and window, seeds and models. Only the
`--fit-units` run has bootstrap intervals: `workflow.benchmark` (the every-model run) returns
no per-unit predictions to resample.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.provenance import provenance
from machine_health.config import Settings, get_settings
from machine_health.domains.turbofan.data import find_file, resolve_cmapss_dir
from machine_health.domains.turbofan.workflow import benchmark

logger = logging.getLogger("bench.turbofan")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SUBSETS = ("FD001", "FD002")
FIT_UNITS = ("reference-excluded", "all")
RESAMPLES = 1000


def data_files(settings: Settings, subset: str) -> list[Path]:
    """The C-MAPSS files a subset's benchmark reads: training, test and true-RUL files."""
    folder = resolve_cmapss_dir(settings.data_dir)
    return [find_file(folder, f"{stem}_{subset}") for stem in ("train", "test", "RUL")]


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _bootstrap(
    true: np.ndarray, preds: dict[str, list[np.ndarray]], resamples: int = RESAMPLES
) -> dict[str, Any]:
    """Seed-mean RMSE / PHM08 per configuration over resampled test units, and paired differences.

    `preds[config]` holds one prediction per test unit for every seed; a resample draws test
    units with replacement (seed 0) and recomputes each seed's metric, then their mean.
    """
    from machine_health.domains.turbofan.metrics import phm08_score

    rng = np.random.default_rng(0)
    draws = rng.integers(0, true.size, size=(resamples, true.size))
    stats: dict[str, dict[str, np.ndarray]] = {}
    for config, runs in preds.items():
        rmse = np.empty(resamples)
        phm = np.empty(resamples)
        for b, idx in enumerate(draws):
            rmse[b] = np.mean([np.sqrt(np.mean((p[idx] - true[idx]) ** 2)) for p in runs])
            phm[b] = np.mean([phm08_score(true[idx], p[idx]) for p in runs])
        stats[config] = {"rmse": rmse, "phm_score": phm}
    out: dict[str, Any] = {
        config: {f"{m}_ci95": _interval(v) for m, v in s.items()} for config, s in stats.items()
    }
    configs = list(stats)
    for other in configs[1:]:
        key = f"{configs[0]} - {other}"
        first, second = stats[configs[0]], stats[other]
        out[key] = {f"{m}_ci95": _interval(first[m] - second[m]) for m in ("rmse", "phm_score")}
    return out


def compare_fit_units(
    subset: str, models: list[str], fit_units: list[str], seeds: int
) -> dict[str, Any]:
    """Train `models` on each training set of `fit_units`, same seeds; score the test file."""
    from machine_health.domains.turbofan.data import load_subset
    from machine_health.domains.turbofan.metrics import rul_metrics
    from machine_health.domains.turbofan.reference import fit_units as reference_excluded
    from machine_health.domains.turbofan.training import evaluate_bundle, predict_test, train_bundle

    settings = get_settings()
    data = load_subset(settings.data_dir, subset)
    true = np.asarray(data.rul, dtype="float64")
    train_sets = {"all": data.train, "reference-excluded": reference_excluded(data.train)}
    result: dict[str, Any] = {"subset": subset, "seeds": list(range(seeds)), "models": {}}
    for model_name in models:
        rows: dict[str, Any] = {}
        preds: dict[str, list[np.ndarray]] = {}
        for which in fit_units:
            train = train_sets[which]
            cache: dict = {}  # an ensemble's members are trained once per training set
            runs = []
            preds[which] = []
            for seed in range(seeds):
                fit = train_bundle(settings, train, model_name=model_name, seed=seed, _cache=cache)
                metrics = evaluate_bundle(fit.bundle, data.test, data.rul)
                _, predicted = predict_test(fit.bundle, data.test)
                predicted = np.asarray(predicted, dtype="float64")
                assert np.isclose(rul_metrics(true, predicted)["rmse"], metrics["rmse"])
                preds[which].append(predicted)
                runs.append({"seed": seed, **metrics, "train_seconds": fit.train_seconds,
                             "val_rmse_last": fit.val_rmse_last, "val_phm_last": fit.val_phm_last,
                             "weights": fit.weights, "epochs": fit.epochs})  # fmt: skip
                logger.info(
                    "%s %s fit-units %s (%d units) seed %d: test rmse %.2f phm %.0f (%.0fs)",
                    subset, model_name, which, train["unit"].nunique(), seed, metrics["rmse"],
                    metrics["phm_score"], fit.train_seconds,
                )  # fmt: skip
            rows[which] = {
                "train_units": int(train["unit"].nunique()),
                "rmse": float(np.mean([r["rmse"] for r in runs])),
                "rmse_std": float(np.std([r["rmse"] for r in runs])),
                "phm_score": float(np.mean([r["phm_score"] for r in runs])),
                "phm_score_std": float(np.std([r["phm_score"] for r in runs])),
                "mae": float(np.mean([r["mae"] for r in runs])),
                "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
                "runs": runs,
            }
        boot = _bootstrap(true, preds)
        for which in fit_units:
            rows[which].update(boot.pop(which))
        rows["paired_differences"] = boot
        result["models"][model_name] = rows
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turbofan")
    parser.add_argument("subsets", nargs="*", default=list(SUBSETS))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--fit-units", nargs="+", choices=FIT_UNITS, default=None,
        help="training units: all (the figures before the gate's carve-out) and/or "
        "reference-excluded (the served models'); compared in one run",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = get_settings()
    for subset in args.subsets:
        started = time.monotonic()
        if args.fit_units:
            models = (args.models or "ensemble").split(",")
            result = compare_fit_units(subset, models, args.fit_units, args.seeds)
            name = f"turbofan_{subset}_fit_units.json"
        else:
            kwargs = {"models": args.models.split(",")} if args.models else {}
            result = benchmark(settings, subset=subset, seeds=args.seeds, **kwargs)
            name = f"turbofan_{subset}.json"
        result["wall_seconds"] = time.monotonic() - started
        result["provenance"] = provenance(
            data=data_files(settings, subset), subset=subset, cap=settings.rul_cap,
            window=settings.turbofan_window, seeds=args.seeds,
            models=args.models or "every model", fit_units=args.fit_units,
            bootstrap=f"{RESAMPLES} resamples of test units, seed 0" if args.fit_units else None,
        )  # fmt: skip
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / name).write_text(json.dumps(result, indent=2) + "\n")
        if args.fit_units:
            logger.info("%s", json.dumps(
                {m: {k: {x: v[x] for x in v if x != "runs"} for k, v in rows.items()}
                 for m, rows in result["models"].items()}, indent=1))  # fmt: skip
            continue
        for row in result["models"]:
            logger.info(
                "%s %-8s rmse %.2f +- %.2f  phm %.0f  train %.0fs",
                subset, row["name"], row["rmse"], row["rmse_std"], row["phm_score"],
                row["train_seconds"],
            )  # fmt: skip


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
