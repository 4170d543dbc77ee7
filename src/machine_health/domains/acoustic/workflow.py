"""The acoustic commands' work: train-and-register, evaluate (each returns a small dict).

`train_and_register` fits on the normal `train` clips, sets the threshold on the normal
`validation` clips, scores the `test` clips, logs an MLflow run (params, metrics, score
histogram, drift reference) and registers the bundle; the first version becomes the champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.acoustic.bundle import AcousticBundle
from machine_health.domains.acoustic.domain import evaluation_set, training_set
from machine_health.domains.acoustic.monitoring import training_reference
from machine_health.domains.acoustic.plots import score_figure
from machine_health.domains.acoustic.training import (
    AcousticTrainingResult,
    Prepared,
    evaluate_bundle,
    train_bundle,
)
from machine_health.errors import ModelError
from machine_health.monitoring.reference import log_reference

DOMAIN = "acoustic"


def log_training(
    bundle: AcousticBundle,
    result: AcousticTrainingResult,
    prepared: Prepared,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
) -> dict[str, float]:
    """Log a fit into the active MLflow run: the detector's params (+ `params`), its validation
    metrics, threshold and training time (+ `metrics`), the validation-score figure. Returns
    the metrics logged."""
    config = bundle.config
    registry.log_params(
        {"kind": result.kind, "stats": ",".join(config.stats), "stat_bands": config.stat_bands,
         "target_fpr": result.target_fpr, "n_train": result.n_train,
         "n_calibration": result.n_calibration, **params}
    )  # fmt: skip
    logged = {f"validation_{k}": v for k, v in result.validation.items()}
    logged |= {"threshold": result.threshold, "train_seconds": result.seconds, **metrics}
    registry.log_metrics(logged)
    registry.log_figure(score_figure(bundle, prepared), "plots/validation_scores.png")
    return logged


def train_and_register(
    settings: Settings, data_dir: Path | None = None, *, seed: int = 0
) -> dict[str, Any]:
    """Train, score the held-out test clips, register; version 1 becomes the champion."""
    data_dir = Path(data_dir or settings.data_dir)
    with registry.start_run(settings, run_name="acoustic-train", tags={"domain": DOMAIN}):
        prepared = training_set(data_dir)
        bundle, result = train_bundle(prepared, seed=seed)
        test = evaluate_bundle(bundle, evaluation_set(data_dir))
        log_training(
            bundle, result, prepared, params={"seed": seed},
            metrics={f"test_{k}": float(v) for k, v in test.items()},
        )  # fmt: skip
        # The drift reference travels with the version (monitoring/reference.py).
        log_reference(training_reference(prepared, data_dir=str(data_dir)))
        ref = registry.log_bundle(settings, bundle)
    champion = registry.ensure_champion(settings, DOMAIN, ref.version)
    return {
        "model": ref.name, "version": ref.version, "champion": champion,
        "threshold": result.threshold, "train_seconds": result.seconds,
        "validation": result.validation, "test": test,
    }  # fmt: skip


def evaluate_model(settings: Settings, model_uri: str, data_dir: Path | None = None) -> dict:
    """Score a registered (`models:/...`) or local bundle on the `test` clips."""
    bundle, _ = registry.load_uri(settings, model_uri, DOMAIN)
    if not isinstance(bundle, AcousticBundle):
        raise ModelError(f"{model_uri}: not an acoustic bundle")
    return evaluate_bundle(bundle, evaluation_set(Path(data_dir or settings.data_dir)))
