"""The turbofan commands: benchmark and train-and-register (each logs MLflow runs, returns a dict).

- `benchmark(settings, subset=..., models=..., seeds=...)` -> the issue's JSON shape;
- `train_and_register(settings, subset=..., model_name=...)` -> registry version and metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from machine_health.config import Settings
from machine_health.domains.turbofan.data import Subset, load_subset
from machine_health.domains.turbofan.models import DEFAULT_MODEL, FitConfig, Fitted, members_of
from machine_health.domains.turbofan.plots import plot_learning_curves, plot_predictions
from machine_health.domains.turbofan.training import (
    VAL_FRACTION,
    TurbofanFit,
    evaluate_bundle,
    predict_test,
    train_bundle,
)

logger = logging.getLogger(__name__)

DOMAIN = "turbofan"


def _log_run(
    fit: TurbofanFit, metrics: dict[str, float], data: Subset, predicted: np.ndarray
) -> None:
    """Params, metrics and plots of a run scored on a test file, into the active MLflow run."""
    import matplotlib.pyplot as plt

    from machine_health import registry

    bundle = fit.bundle
    registry.log_params(
        {"subset": data.name, "model": fit.model, "seed": fit.seed,
         "window": bundle.window, "rul_cap": bundle.cap, "regimes": bundle.transform.n_regimes,
         "sensors": ",".join(bundle.transform.sensors),
         "dropped_sensors": ",".join(bundle.transform.dropped) or "-",
         "val_fraction": VAL_FRACTION, "epochs": json.dumps(fit.epochs),
         "weights": json.dumps(fit.weights)}
    )  # fmt: skip
    registry.log_metrics(
        {**metrics, "train_seconds": fit.train_seconds, "val_rmse": fit.val_rmse,
         "val_rmse_last": fit.val_rmse_last, "val_phm_last": fit.val_phm_last}
    )  # fmt: skip
    title = f"{data.name} {fit.model} seed {fit.seed}"
    for fig, name in (
        (plot_predictions(data.rul, predicted, title), "plots/pred_vs_true.png"),
        (plot_learning_curves(fit.history, title), "plots/learning_curve.png"),
    ):
        registry.log_figure(fig, name)
        plt.close(fig)


# --- benchmark and registration ----------------------------------------------------------------
def benchmark(
    settings: Settings,
    *,
    subset: str = "FD001",
    models: Sequence[str] = ("hgb", "mlp", "cnn", "lstm", "cnn_gru", "cnn_ensemble", "ensemble"),
    seeds: int = 3,
    config: FitConfig | None = None,
    log_mlflow: bool = True,
) -> dict[str, Any]:
    """Train and score every model over `seeds` seeds; the issue's JSON shape (+ per-seed rows).

    An ensemble reuses its members trained with the same seed (its train_seconds is their sum).
    """
    data = load_subset(settings.data_dir, subset)
    cache: dict[tuple[str, int], tuple[Fitted, float]] = {}
    rows = []
    for model_name in models:
        members_of(model_name)  # fail fast on an unknown name
        runs = []
        for seed in range(seeds):
            fit = train_bundle(
                settings, data.train, model_name=model_name, seed=seed, config=config,
                _cache=cache,
            )  # fmt: skip
            metrics = evaluate_bundle(fit.bundle, data.test, data.rul)
            runs.append({"seed": seed, **metrics, "train_seconds": fit.train_seconds,
                         "val_rmse": fit.val_rmse, "val_rmse_last": fit.val_rmse_last,
                         "val_phm_last": fit.val_phm_last, "weights": fit.weights,
                         "epochs": fit.epochs})  # fmt: skip
            logger.info(
                "%s %s seed %d: val_rmse_last %.2f; test rmse %.2f phm %.0f (%.0fs)",
                subset, model_name, seed, fit.val_rmse_last, metrics["rmse"],
                metrics["phm_score"], fit.train_seconds,
            )  # fmt: skip
            if log_mlflow:
                from machine_health import registry

                _, predicted = predict_test(fit.bundle, data.test)
                with registry.start_run(
                    settings, run_name=f"bench-{subset}-{model_name}-s{seed}",
                    tags={"domain": DOMAIN, "kind": "benchmark"},
                ):  # fmt: skip
                    _log_run(fit, metrics, data, predicted)
        rows.append(_summarise(model_name, runs))
    best = min(rows, key=lambda r: r["rmse"])["name"]
    return {"subset": subset, "models": rows, "best": best}


def _summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in runs]))

    return {
        "name": name,
        "rmse": mean("rmse"),
        "phm_score": mean("phm_score"),
        "mae": mean("mae"),
        "r2": mean("r2"),
        "smape": mean("smape"),
        "train_seconds": mean("train_seconds"),
        "predict_ms_per_unit": mean("predict_ms_per_unit"),
        "val_rmse": mean("val_rmse"),
        "val_rmse_last": mean("val_rmse_last"),
        "val_phm_last": mean("val_phm_last"),
        "seeds": len(runs),
        "rmse_std": float(np.std([r["rmse"] for r in runs])),
        "phm_score_std": float(np.std([r["phm_score"] for r in runs])),
        "runs": runs,
    }


def train_and_register(
    settings: Settings,
    *,
    subset: str = "FD001",
    model_name: str = DEFAULT_MODEL,
    seed: int = 0,
    config: FitConfig | None = None,
) -> dict[str, Any]:
    """Train one model, score it on the test file, register it; version 1 becomes champion."""
    from machine_health import registry
    from machine_health.domains.turbofan.monitoring import drift_reference
    from machine_health.domains.turbofan.reference import fit_units
    from machine_health.monitoring.reference import log_reference

    data = load_subset(settings.data_dir, subset)
    # The gate's reference units are never fitted, by the first champion either.
    fit = train_bundle(
        settings, fit_units(data.train), model_name=model_name, seed=seed, config=config
    )
    metrics = evaluate_bundle(fit.bundle, data.test, data.rul)
    _, predicted = predict_test(fit.bundle, data.test)
    with registry.start_run(
        settings, run_name=f"train-{subset}-{model_name}", tags={"domain": DOMAIN}
    ) as run:
        _log_run(fit, metrics, data, predicted)
        # The training inputs' reference, so drift can be measured for this version too.
        log_reference(drift_reference(data.train, source=f"train {subset}"))
        ref = registry.log_bundle(settings, fit.bundle)
    champion = registry.ensure_champion(settings, DOMAIN, ref.version)
    return {
        "subset": subset, "model": model_name, "seed": seed, "version": ref.version,
        "champion": champion, "run_id": run.info.run_id, "train_seconds": fit.train_seconds,
        **metrics,
    }  # fmt: skip
