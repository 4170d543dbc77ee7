"""No usage telemetry leaves the platform's processes unless the operator opts in.

Each case runs a fresh interpreter with a minimal environment: MLflow itself stays quiet under CI
and pytest markers (CI, PYTEST_CURRENT_TEST), so only a clean process shows what a serving pod
or a pipeline step would do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os
import machine_health.registry  # imports mlflow, as every serving and pipeline process does
from mlflow.telemetry.client import get_telemetry_client
print(json.dumps({"client": get_telemetry_client() is not None,
                  "env": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {
        k: os.environ[k] for k in ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE") if k in os.environ
    }
    return {**keep, **extra}


def test_mlflow_telemetry_is_off_in_the_platforms_processes() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_clean_env(), capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"client": False, "env": "true"}


def test_an_operators_choice_is_kept() -> None:
    # Only the variable is read back: importing mlflow with telemetry on would start its client.
    probe = "import os, machine_health; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_clean_env(MLFLOW_DISABLE_TELEMETRY="false"),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "false"
