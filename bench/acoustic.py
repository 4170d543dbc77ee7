"""Acoustic benchmark: DCASE 2023 valve clips, our detector vs the challenge's autoencoder.

    .venv/bin/python -m bench acoustic

Both systems train on the same NORMAL `train` clips (25 per domain) and are scored on the same
`test` clips (15 normal + 30 anomalous per domain) of the fixed split by clip index
(domains/acoustic/data.py); the detector's settings were chosen on `validation` clips only
(`python -m research.acoustic_selection`). Metrics per domain: AUC and pAUC over FPR 0-0.1
(`roc_auc_score(max_fpr=0.1)`, McClish-standardised, as the challenge's evaluator computes it),
the pooled pAUC and the official score (harmonic mean of AUC source, AUC target, pooled pAUC).
Three seeds, mean +- std; the detector is deterministic, so its spread comes from a bootstrap
over test clips instead (1000 resamples within each domain and label).

Autoencoder baseline (DCASE 2020-2023 "simple autoencoder mode"): 128 log-mel bands, 5 frames
stacked -> 640 values, dense 128-128-128-128-8-128-128-128-128 with batch norm + ReLU, linear
output, MSE loss, Adam; score = mean squared reconstruction error over the clip's vectors, and
the 2023 "selective Mahalanobis" score (error vectors' distance under the source or target
error covariance, whichever is smaller). Epochs kept modest (2 shared cores): EPOCHS below.
Writes docs/benchmarks/acoustic.json.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.provenance import provenance
from machine_health.config import get_settings
from machine_health.domains.acoustic import (
    FeatureConfig,
    Prepared,
    all_clips,
    evaluate_bundle,
    evaluate_scores,
    train_bundle,
)
from machine_health.domains.acoustic.data import resolve_dataset_dir
from machine_health.domains.acoustic.features import stack_frames

logger = logging.getLogger("bench.acoustic")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SEEDS = (0, 1, 2)
EPOCHS = 30
BATCH = 256
CONTEXT = 5
BOOTSTRAP = 1000
REPORTED = ("auc_source", "auc_target", "pauc_source", "pauc_target", "pauc", "official_score")


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    values = {key: [r[key] for r in runs] for key in REPORTED}
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in values.items()}


def _bootstrap(scores: np.ndarray, y: np.ndarray, domains: np.ndarray) -> dict[str, list[float]]:
    """95 % intervals of the test metrics, resampling clips within each (domain, label)."""
    rng = np.random.default_rng(0)
    groups = [
        np.flatnonzero((domains == d) & (y == c)) for d in ("source", "target") for c in (0, 1)
    ]
    draws = []
    for _ in range(BOOTSTRAP):
        rows = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        draws.append(evaluate_scores(scores[rows], y[rows], domains[rows]))
    values = {key: [d[key] for d in draws] for key in REPORTED}
    return {k: [float(np.percentile(v, q)) for q in (2.5, 97.5)] for k, v in values.items()}


def _autoencoder(dim: int, seed: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(dim,))
    x = inputs
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    model = keras.Model(inputs, layers.Dense(dim)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    return model


def _selective_mahalanobis(errors: np.ndarray, train_errors: dict[str, np.ndarray]) -> np.ndarray:
    """Per clip: mean over its vectors of min over domains of the error's Mahalanobis distance."""
    per_domain = []
    for fitted in train_errors.values():
        mean = fitted.mean(axis=0)
        precision = np.linalg.pinv(np.cov(fitted, rowvar=False))
        centred = errors - mean
        per_domain.append(
            np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", centred, precision, centred), 0))
        )
    return np.minimum(*per_domain).mean(axis=1)  # fmt: skip


def run_baseline(prepared: Prepared, seed: int) -> dict[str, dict[str, float]]:
    """Train the challenge's autoencoder on the normal train clips; test metrics of both scores."""
    vectors = stack_frames(prepared.spectra, CONTEXT)  # (clips, vectors, 640)
    train = prepared.part("train", "normal")
    test = prepared.part("test")
    model = _autoencoder(vectors.shape[-1], seed)
    fit_rows = vectors[train].reshape(-1, vectors.shape[-1])
    model.fit(fit_rows, fit_rows, epochs=EPOCHS, batch_size=BATCH, shuffle=True, verbose=0)
    dim = vectors.shape[-1]
    recon = model.predict(vectors.reshape(-1, dim), batch_size=4096, verbose=0).reshape(
        vectors.shape
    )
    errors = vectors - recon
    mse = (errors**2).mean(axis=-1).mean(axis=1)
    domains = prepared.clips.domains
    train_errors = {
        d: errors[train & (domains == d)].reshape(-1, dim) for d in ("source", "target")
    }
    y = prepared.clips.y
    maha = _selective_mahalanobis(errors[test], train_errors)
    return {
        "mse": evaluate_scores(mse[test], y[test], domains[test]),
        "mahalanobis": evaluate_scores(maha, y[test], domains[test]),
    }


def main(argv: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    settings = get_settings()
    prepared = all_clips(settings.data_dir)
    counts = {
        f"{d}_{lab}_{part}": int(((prepared.clips.domains == d) & prepared.part(part, lab)).sum())
        for d in ("source", "target") for lab in ("normal", "anomaly")
        for part in ("train", "validation", "test")
    }  # fmt: skip
    ours = []
    for seed in SEEDS:
        bundle, _ = train_bundle(prepared, seed=seed)
        ours.append(evaluate_bundle(bundle, prepared, "test"))
    test = prepared.part("test")
    scores = bundle.score_spectrograms(list(prepared.spectra[test]))
    interval = _bootstrap(scores, prepared.clips.y[test], prepared.clips.domains[test])
    ours_seconds = time.monotonic() - started

    baseline_started = time.monotonic()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    baseline = [run_baseline(prepared, seed) for seed in SEEDS]
    block = provenance(
        data=[resolve_dataset_dir(settings.data_dir)], **FeatureConfig().as_dict(),
        split="fixed split by clip index (domains/acoustic/data.py)", seeds=list(SEEDS),
    )  # fmt: skip
    result = {
        "seeds": list(SEEDS),
        "split_counts": counts,
        "detector": {"config": FeatureConfig().as_dict(), "kind": "mahalanobis"},
        "ours": {
            "per_seed": ours,
            "summary": _summary(ours),
            "bootstrap_95": interval,
            "threshold_test": {
                "false_alarm_rate": float(np.mean([r["false_alarm_rate"] for r in ours])),
                "recall": float(np.mean([r["recall_at_threshold"] for r in ours])),
            },
        },
        "autoencoder": {
            "epochs": EPOCHS,
            "batch": BATCH,
            "mse": _summary([b["mse"] for b in baseline]),
            "mahalanobis": _summary([b["mahalanobis"] for b in baseline]),
            "per_seed": baseline,
        },
        "seconds": {
            "ours_3_seeds_and_bootstrap": round(ours_seconds, 1),
            "autoencoder_3_seeds": round(time.monotonic() - baseline_started, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "host": {
            "cpus": os.cpu_count(),
            "load_average_1m_5m_15m": os.getloadavg(),
            "python": platform.python_version(),
        },
        "provenance": block,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "acoustic.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, summary in (("ours", result["ours"]["summary"]),
                          ("ae_mse", result["autoencoder"]["mse"]),
                          ("ae_mahalanobis", result["autoencoder"]["mahalanobis"])):  # fmt: skip
        logger.info(
            "%s %s", name, {k: f"{v['mean']:.3f}+-{v['std']:.3f}" for k, v in summary.items()}
        )
    logger.info("bootstrap 95%% %s seconds %s", interval, result["seconds"])
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main([])
