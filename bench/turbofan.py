"""Turbofan benchmark: every RUL model on C-MAPSS FD001 and FD002, mean over 3 seeds.

    .venv/bin/python -m bench turbofan            # FD001 and FD002
    .venv/bin/python -m bench.turbofan FD001      # one subset

Same function and JSON as `machine-health benchmark turbofan --subset FDxxx --seeds 3`; writes
docs/benchmarks/turbofan_<subset>.json and logs one MLflow run per model and seed.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path

from machine_health.config import get_settings
from machine_health.domains.turbofan.workflow import benchmark

logger = logging.getLogger("bench.turbofan")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SUBSETS = ("FD001", "FD002")


def main(argv: list[str]) -> None:
    settings = get_settings()
    for subset in argv or SUBSETS:
        started = time.monotonic()
        result = benchmark(settings, subset=subset, seeds=3)
        result["wall_seconds"] = time.monotonic() - started
        result["machine"] = {"cpus": 2, "python": platform.python_version()}
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"turbofan_{subset}.json").write_text(json.dumps(result, indent=2))
        for row in result["models"]:
            logger.info(
                "%s %-8s rmse %.2f +- %.2f  phm %.0f  train %.0fs",
                subset, row["name"], row["rmse"], row["rmse_std"], row["phm_score"],
                row["train_seconds"],
            )  # fmt: skip


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
