"""Step 4: train the challenger on the base data + the archived labelled data; log it to MLflow.

The model is the domain's own `train_bundle`; the run logs params (run id, interval, snapshot
sha256 and row counts, git commit), training metrics, plots and the drift reference, and the
bundle as the run's model WITHOUT registering it (the register step does, after the gate). The
bundle is also saved in the workspace for the evaluate step.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from typing import Any

import numpy as np

from machine_health import registry
from machine_health.config import Settings
from machine_health.errors import ModelError
from machine_health.pipeline import datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.rescale import (
    SEED,
    VIBRATION_FEATURES,
    check_bundle_transform,
    turbofan_fit_config,
)
from machine_health.pipeline.workspace import Workspace

logger = logging.getLogger(__name__)

STEP = "train"
BUNDLE_DIR = "challenger"
#: largest allowed gap between the bundle's scaling and the rescale step's (float round-off).
TRANSFORM_TOLERANCE = 1e-9
REFERENCE_WINDOWS = 1000


def _train_turbofan(
    settings: Settings, training: datasets.TrainingSet, ws: Workspace
) -> tuple[Any, dict]:
    import matplotlib.pyplot as plt

    from machine_health.domains.turbofan.training import (
        merge_extra,
        plot_learning_curves,
        train_bundle,
    )
    from machine_health.monitoring.reference import log_reference, turbofan_reference

    base, extra = training.data
    bundle, info = train_bundle(
        settings, base, model_name=settings.retrain_turbofan_model, seed=SEED, extra_df=extra,
        config=turbofan_fit_config(settings),
    )  # fmt: skip
    registry.log_params(
        {"model": info["model"], "epochs": info["epochs"], "window_stride": info["window_stride"]}
    )
    registry.log_metrics(
        {"train_seconds": info["train_seconds"], "val_rmse": info["val_rmse"],
         "val_rmse_last": info["val_rmse_last"], "val_phm_last": info["val_phm_last"]}
    )  # fmt: skip
    fig = plot_learning_curves(info["history"], f"retrain {info['model']}")
    registry.log_figure(fig, "plots/learning_curve.png")
    plt.close(fig)
    log_reference(turbofan_reference(merge_extra(base, extra), source="pipeline"))
    return bundle, {
        "train_seconds": info["train_seconds"],
        "val_rmse": info["val_rmse"],
        "val_rmse_last": info["val_rmse_last"],
        "train_windows": info["train_windows"],
        "window_stride": info["window_stride"],
    }


def _train_vibration(
    settings: Settings, training: datasets.TrainingSet, ws: Workspace
) -> tuple[Any, dict]:
    import matplotlib.pyplot as plt

    from machine_health.domains.vibration import train_bundle
    from machine_health.domains.vibration.plots import envelope_figure
    from machine_health.monitoring.reference import log_reference, vibration_reference

    windows = training.data
    # The rescale step computed the physics features of exactly these windows (the same
    # snapshot, decoded the same way): computing them again was half of this step's time.
    cached = ws.file(VIBRATION_FEATURES)
    features = np.load(cached) if cached.exists() else None
    bundle, info = train_bundle(
        settings, windows, seed=SEED, extra={"hop": training.facts["hop"]}, features=features
    )
    registry.log_params({"threshold": round(bundle.threshold, 6), "target_fpr": bundle.target_fpr})
    registry.log_metrics(
        {"train_seconds": info["train_seconds"], "n_calibration": info["n_calibration"]}
    )
    fig = envelope_figure(windows, bundle.config)
    registry.log_figure(fig, "plots/envelope_spectra.png")
    plt.close(fig)
    take = np.unique(np.linspace(0, len(windows) - 1, REFERENCE_WINDOWS).astype(int))
    log_reference(
        vibration_reference(
            windows.windows[take], windows.rpm[take], bundle.config, source="pipeline"
        )
    )
    return bundle, {"train_seconds": info["train_seconds"], "threshold": bundle.threshold}


def run(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
) -> dict[str, Any]:
    """Train the challenger, check its transform is the rescale step's, log the MLflow run."""
    ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
    if not force and (done := ws.result(STEP)) is not None:
        return done
    if (nothing := ws.short_circuited()) is not None:
        return ws.skipped(STEP, nothing)
    extracted = ws.require("extract")
    rescaled = ws.require("rescale")
    training = datasets.training_set(settings, domain, read_snapshot(ws))
    trainer = _train_turbofan if domain == "turbofan" else _train_vibration
    tags = {"domain": domain, "pipeline_run_id": run_id, "snapshot_sha256": extracted["sha256"]}
    registry.end_abandoned_runs(settings, {"domain": domain, "pipeline_run_id": run_id})
    with registry.start_run(settings, run_name=f"retrain-{domain}", tags=tags) as mlflow_run:
        registry.log_params(
            {
                "domain": domain,
                "run_id": run_id,
                "interval_start": ws.interval["start"],
                "interval_end": ws.interval["end"],
                "snapshot_sha256": extracted["sha256"],
                "snapshot_rows": extracted["rows"],
                "git_commit": registry.git_commit(),
                "seed": SEED,
                **{f"data_{k}": v for k, v in training.facts.items()},
            }
        )
        bundle, metrics = trainer(settings, training, ws)
        gap = check_bundle_transform(domain, bundle, ws)
        if not gap <= TRANSFORM_TOLERANCE:
            raise ModelError(
                f"the trained bundle's scaling differs from the rescale step's by {gap:g} "
                f"(see {rescaled['transform']}): refusing a model whose transform is not the "
                "one this run fitted"
            )
        registry.log_metrics({"transform_gap": gap})
        logged = registry.log_bundle(settings, bundle, register=False)
    target = ws.file(BUNDLE_DIR)
    if target.exists():
        shutil.rmtree(target)
    bundle.save(target)
    return ws.record(
        STEP,
        {
            "mlflow_run_id": mlflow_run.info.run_id,
            "model_uri": logged.source,
            "bundle": str(target),
            "transform_gap": gap,
            **{k: float(v) for k, v in metrics.items()},
        },
    )
