"""Vibration benchmark: time-split accuracy / anomaly figures and in-process prediction latency.

    .venv/bin/python -m bench vibration

Trains on the first 70 % of every CWRU recording and scores the last 30 % (an MLflow run under
the configured tracking store), then times `VibrationBundle.predict` on single real windows
(features + both models) and each stage on its own. Writes docs/benchmarks/vibration.json (the
`machine-health benchmark vibration` JSON) and docs/benchmarks/vibration_details.json.

The served model fits the training portion minus the gate's reference carve-out (the last 1/7
of every recording's training portion, `reference.carve`), and so does this benchmark.
`--train-portion whole` fits the whole training portion instead (the figures before the
carve-out; the carve disabled for this run only), scores the same test portion and writes
docs/benchmarks/vibration_whole_train.json (figures and counts, no latency):

    .venv/bin/python -m bench.vibration --train-portion whole
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from bench.provenance import provenance
from machine_health.config import Settings, get_settings
from machine_health.domains.vibration import workflow
from machine_health.domains.vibration.data import WindowSet, resolve_manifest_dir
from machine_health.domains.vibration.features import extract_features

logger = logging.getLogger("bench.vibration")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
REPEATS = 500


def _percentiles_ms(func: Callable[[int], object], n: int) -> dict[str, float]:
    for i in range(10):
        func(i)
    wall, cpu = [], []
    for i in range(n):
        started, started_cpu = time.perf_counter(), time.thread_time()
        func(i)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    # CPU time of this thread barely depends on what else runs on the host; wall time does.
    return {
        "p50_ms": float(np.percentile(wall, 50)),
        "p95_ms": float(np.percentile(wall, 95)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
    }


def _provenance(settings: Settings, train_portion: str) -> dict[str, Any]:
    """The provenance block: the CWRU folder's checksum (manifest and recordings), the window,
    hop and sample rate, and which training portion was fitted."""
    return provenance(
        data=[resolve_manifest_dir(settings.data_dir)], window=workflow.WINDOW, hop=workflow.HOP,
        sample_rate=workflow.SAMPLE_RATE, split="time split per recording: first 70 % train",
        train_portion=train_portion,
    )  # fmt: skip


def _whole(windows: WindowSet) -> tuple[WindowSet, WindowSet]:
    """`reference.carve` disabled: every training window is fitted, none is held back."""
    return windows, windows.subset(np.zeros(len(windows), dtype=bool))


def whole_train_portion(settings: Settings) -> None:
    with mock.patch("machine_health.domains.vibration.reference.carve", _whole):
        result, details, _ = workflow.run_benchmark(settings, settings.data_dir)
    details.pop("latency", None)
    out = {
        **result,
        "details": details,
        "train_portion": "whole (reference carve-out disabled)",
        "provenance": _provenance(settings, "whole (reference carve-out disabled)"),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vibration_whole_train.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    logger.info("whole training portion: %s", json.dumps(result))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vibration")
    parser.add_argument(
        "--train-portion", choices=("reference-excluded", "whole"), default="reference-excluded",
        help="reference-excluded: as the served model is trained (default); whole: the carve-out "
        "disabled (the figures before it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.train_portion == "whole":
        whole_train_portion(settings)
        return
    result, details, bundle = workflow.run_benchmark(settings, settings.data_dir)
    test = workflow.load_portion(settings.data_dir, "test")
    rows = np.linspace(0, len(test) - 1, REPEATS).astype(int)
    items = [
        {"samples": test.windows[i].tolist(), "sample_rate": test.sample_rate,
         "rpm": float(test.rpm[i])}
        for i in rows
    ]  # fmt: skip
    features = extract_features(test.windows[rows], test.rpm[rows], bundle.config)
    stages = {
        "predict_one_window": _percentiles_ms(lambda i: bundle.predict([items[i]]), REPEATS),
        "features_one_window": _percentiles_ms(
            lambda i: extract_features(test.windows[rows[i]][None], None, bundle.config), REPEATS
        ),
        "models_one_window": _percentiles_ms(
            lambda i: bundle.score_features(features[i : i + 1]), REPEATS
        ),
    }
    started = time.perf_counter()
    bundle.predict(items)
    stages["predict_batch_500_ms_per_window"] = (time.perf_counter() - started) * 1000 / REPEATS
    block = _provenance(settings, "reference-excluded (as served)")
    details.update(
        {
            "stages": stages,
            "host": {
                "cpus": os.cpu_count(),
                "load_average_1m_5m_15m": os.getloadavg(),
                "python": platform.python_version(),
            },
            "provenance": block,
        }
    )
    OUT.mkdir(parents=True, exist_ok=True)
    result = {**result, "provenance": block}
    (OUT / "vibration.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "vibration_details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    logger.info("result %s", json.dumps(result))
    logger.info("stages %s load %s", json.dumps(stages), os.getloadavg())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
