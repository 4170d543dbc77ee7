"""Vibration benchmark: time-split accuracy / anomaly figures and in-process prediction latency.

    .venv/bin/python -m bench vibration

Trains on the first 70 % of every CWRU recording and scores the last 30 % (an MLflow run under
the configured tracking store), then times `VibrationBundle.predict` on single real windows
(features + both models) and each stage on its own. Writes docs/benchmarks/vibration.json (the
`machine-health benchmark vibration` JSON) and docs/benchmarks/vibration_details.json.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from machine_health.config import get_settings
from machine_health.domains.vibration import workflow
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


def main(argv: list[str]) -> None:
    settings = get_settings()
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
    details.update(
        {
            "stages": stages,
            "host": {
                "cpus": os.cpu_count(),
                "load_average_1m_5m_15m": os.getloadavg(),
                "python": platform.python_version(),
            },
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": ".venv/bin/python -m bench vibration",
        }
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vibration.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "vibration_details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    logger.info("result %s", json.dumps(result))
    logger.info("stages %s load %s", json.dumps(stages), os.getloadavg())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main([])
