"""The retraining pipeline: one module per step, each `run(*, settings, domain, run_id,
interval_start, interval_end, ...) -> small dict`, reading and writing the run's workspace.

check -> extract -> validate -> rescale -> train -> evaluate -> register -> reload

The steps are declared once, in order, in `steps.STEPS` (what each reads and needs); their
shared preamble is `steps.step`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from machine_health.config import Settings
from machine_health.pipeline.steps import STEPS, Step

__all__ = ["STEPS", "XCOM_DIR", "Step", "emit_xcom", "run_all", "step_function"]


def step_function(name: str) -> Callable[..., dict[str, Any]]:
    """The `run` function of a step (KeyError for an unknown step)."""
    if name not in STEPS:
        raise KeyError(f"unknown step {name!r} (steps: {', '.join(STEPS)})")
    return STEPS[name].function()


def run_all(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every step in order on this machine (the local runner); stops after a "no" from check."""
    results: dict[str, dict[str, Any]] = {}
    keys = {"settings": settings, "domain": domain, "run_id": run_id,
            "interval_start": interval_start, "interval_end": interval_end}  # fmt: skip
    results["check"] = step_function("check")(**keys, force=force)
    if not results["check"]["retrain"]:
        return results
    for name in list(STEPS)[1:]:
        results[name] = step_function(name)(**keys)
    return results


#: where a KubernetesPodOperator with do_xcom_push collects a pod's result.
XCOM_DIR = "/airflow/xcom"


def emit_xcom(result: dict[str, Any], xcom_dir: str = XCOM_DIR) -> bool:
    """Write `result` as the pod's XCom (return.json) when running inside such a pod."""
    import json
    from pathlib import Path

    directory = Path(xcom_dir)
    if not directory.is_dir():
        return False
    (directory / "return.json").write_text(json.dumps(result, default=str))
    return True
