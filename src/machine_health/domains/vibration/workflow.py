"""The vibration commands: benchmark, train-and-register, evaluate (each returns a small dict).

`benchmark` and `train_and_register` train on the TRAIN portion of every recording and score
the TEST portion (time split), log an MLflow run with plots, and return the benchmark JSON:
`{"classifier": {...}, "anomaly": {...}, "train_seconds": f, "predict_ms_per_window": f}`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.vibration.bundle import VibrationBundle
from machine_health.domains.vibration.data import (
    Portion,
    WindowSet,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
)
from machine_health.domains.vibration.monitoring import training_reference
from machine_health.domains.vibration.plots import (
    confusion_figure,
    envelope_figure,
    score_histogram,
)
from machine_health.domains.vibration.training import evaluate_bundle, flat_metrics, train_bundle
from machine_health.errors import ModelError
from machine_health.monitoring.reference import log_reference

logger = logging.getLogger(__name__)

WINDOW = 2048
#: 8x overlap: the normal recording holds ~119 non-overlapping windows of 2048 samples only.
HOP = 256
SAMPLE_RATE = 48_000.0
DOMAIN = "vibration"


def load_portion(
    data_dir: Path,
    portion: Portion,
    *,
    window: int = WINDOW,
    hop: int = HOP,
    sample_rate: float = SAMPLE_RATE,
) -> WindowSet:
    """Windows of one time portion of every recording a manifest directory lists."""
    recordings = load_manifest(resolve_manifest_dir(data_dir))
    return make_windows(
        recordings, portion=portion, window=window, hop=hop, sample_rate=sample_rate
    )


def predict_latency_ms(
    bundle: VibrationBundle, windows: WindowSet, n: int = 200
) -> dict[str, float]:
    """Per-window wall time of `bundle.predict` on one real window at a time (p50 / p95), and
    per window in one batch of `n` (features + both models, list-of-floats input)."""
    picks = np.linspace(0, len(windows) - 1, min(n, len(windows))).astype(int)
    items = [
        {"samples": windows.windows[i].tolist(), "sample_rate": windows.sample_rate,
         "rpm": float(windows.rpm[i])}
        for i in picks
    ]  # fmt: skip
    bundle.predict(items[:5])  # warm caches (filters, tapers, thread pools)
    single = []
    for item in items:
        started = time.perf_counter()
        bundle.predict([item])
        single.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    bundle.predict(items)
    batch = (time.perf_counter() - started) * 1000 / len(items)
    return {
        "p50_ms": float(np.percentile(single, 50)),
        "p95_ms": float(np.percentile(single, 95)),
        "batch_ms_per_window": float(batch),
        "n": float(len(items)),
    }


def _log_plots(bundle: VibrationBundle, windows: WindowSet, metrics: dict[str, Any]) -> None:
    scores, _ = bundle.score_windows(windows.windows, windows.rpm)
    registry.log_figure(confusion_figure(metrics), "plots/confusion_matrix.png")
    registry.log_figure(
        score_histogram(scores, windows.is_fault, bundle.threshold), "plots/anomaly_scores.png"
    )
    registry.log_figure(envelope_figure(windows, bundle.config), "plots/envelope_spectra.png")


def _train_and_score(
    settings: Settings, data_dir: Path, *, seed: int, hop: int
) -> tuple[VibrationBundle, dict[str, Any], dict[str, Any], WindowSet]:
    recordings = load_manifest(resolve_manifest_dir(data_dir))
    train, test = (
        make_windows(recordings, portion=p, window=WINDOW, hop=hop, sample_rate=SAMPLE_RATE)
        for p in ("train", "test")
    )
    from machine_health.domains.vibration.reference import carve

    train, _ = carve(train)  # the gate's reference windows are never fitted, by v1 either
    fit = train_bundle(settings, train, seed=seed, extra={"hop": hop, "data_dir": str(data_dir)})
    bundle = fit.bundle
    metrics = evaluate_bundle(bundle, test)
    latency = predict_latency_ms(bundle, test)
    result = {
        **metrics,
        "train_seconds": float(fit.train_seconds),
        "predict_ms_per_window": latency["p50_ms"],
    }
    details = {
        **bundle.info,
        "n_test_windows": len(test),
        "n_test_normal": int((~test.is_fault).sum()),
        # Non-overlapping-equivalent normal test windows: the real resolution of observed_fpr.
        "n_test_normal_independent": int((~test.is_fault).sum() * hop // WINDOW),
        "latency": latency,
        **_score_margins(bundle, test),
    }
    return bundle, result, details, test


def _score_margins(bundle: VibrationBundle, test: WindowSet) -> dict[str, float]:
    """How far the test scores sit from the threshold (ratios > 1 are flagged)."""
    scores, _ = bundle.score_windows(test.windows, test.rpm)
    normal, fault = scores[~test.is_fault], scores[test.is_fault]
    return {
        "threshold": bundle.threshold,
        "max_normal_test_score_over_threshold": float(normal.max() / bundle.threshold),
        "min_fault_test_score_over_threshold": float(fault.min() / bundle.threshold),
    }


def _log_run(
    bundle: VibrationBundle, result: dict[str, Any], details: dict[str, Any], test: WindowSet
) -> None:
    registry.log_params(
        {
            "window": bundle.config.window,
            "hop": details["hop"],
            "sample_rate": bundle.config.sample_rate,
            "envelope_band": bundle.config.envelope_band,
            "target_fpr": bundle.target_fpr,
            "seed": details["seed"],
            "threshold": round(bundle.threshold, 6),
        }
    )
    registry.log_metrics(flat_metrics(result))
    registry.log_metrics({f"latency_{k}": v for k, v in details["latency"].items()})
    registry.log_dict({"result": result, "details": details}, "vibration_benchmark.json")
    _log_plots(bundle, test, result)


def run_benchmark(
    settings: Settings, data_dir: Path | None = None, *, seed: int = 0, hop: int = HOP
) -> tuple[dict[str, Any], dict[str, Any], VibrationBundle]:
    """`benchmark` plus its details (window counts, latency percentiles) and the bundle."""
    data_dir = Path(data_dir or settings.data_dir)
    with registry.start_run(settings, run_name="vibration-benchmark", tags={"domain": DOMAIN}):
        bundle, result, details, test = _train_and_score(settings, data_dir, seed=seed, hop=hop)
        _log_run(bundle, result, details, test)
    logger.info("vibration benchmark: %s", flat_metrics(result))
    return result, details, bundle


def benchmark(
    settings: Settings, data_dir: Path | None = None, *, seed: int = 0, hop: int = HOP
) -> dict[str, Any]:
    """Train on the train portion, score the test portion, log an MLflow run (no registration)."""
    return run_benchmark(settings, data_dir, seed=seed, hop=hop)[0]


def train_and_register(
    settings: Settings, data_dir: Path | None = None, *, seed: int = 0, hop: int = HOP
) -> dict[str, Any]:
    """Train, score the held-out test portion, register; version 1 becomes the champion."""
    data_dir = Path(data_dir or settings.data_dir)
    with registry.start_run(settings, run_name="vibration-train", tags={"domain": DOMAIN}):
        bundle, result, details, test = _train_and_score(settings, data_dir, seed=seed, hop=hop)
        _log_run(bundle, result, details, test)
        # The drift reference travels with the version (monitoring/reference.py).
        log_reference(training_reference(data_dir, bundle.config))
        ref = registry.log_bundle(settings, bundle)
    champion = registry.ensure_champion(settings, DOMAIN, ref.version)
    return {"model": ref.name, "version": ref.version, "champion": champion, **result}


def evaluate_model(
    settings: Settings, model_uri: str, data_dir: Path | None = None, *, portion: Portion = "test"
) -> dict[str, Any]:
    """Score a registered (`models:/...`) or local bundle on a labelled manifest directory."""
    bundle, _ = registry.load_uri(settings, model_uri, DOMAIN)
    if not isinstance(bundle, VibrationBundle):
        raise ModelError(f"{model_uri}: not a vibration bundle")
    windows = load_portion(
        Path(data_dir or settings.data_dir),
        portion,
        window=bundle.config.window,
        hop=int(bundle.info.get("hop", HOP)),
        sample_rate=bundle.config.sample_rate,
    )
    # A retrained model may have fitted test-portion windows that came back through the archive
    # (`retrain.fitted_spans`): those are left out, and how many is reported.
    fitted = np.zeros(len(windows), dtype=bool)
    length = windows.windows.shape[1]
    for source, spans in (bundle.info.get("fitted_spans") or {}).items():
        rows = windows.sources == source
        for start, end in spans:
            fitted |= rows & (windows.starts < end) & (windows.starts + length > start)
    metrics = evaluate_bundle(bundle, windows.subset(~fitted))
    return {
        **metrics,
        "windows": int((~fitted).sum()),
        "excluded_fitted_windows": int(fitted.sum()),
        "train_seconds": float(bundle.info.get("train_seconds", float("nan"))),
        "predict_ms_per_window": predict_latency_ms(bundle, windows, n=100)["p50_ms"],
    }
