"""Driving the retrain DAGs from a test: archived traffic in, `dag.test()` in Airflow's own venv.

Shared by the end-to-end DAG test (tests/integration/test_pipeline_dag.py), the pipeline fault
test (tests/reliability/test_pipeline_dag_faults.py) and bench/reliability.py. The DAG runs in
`.venv-airflow` through tests/dags/airflow_probe.py (Airflow and the project do not share a
venv); its steps run the project's CLI in local execution mode.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from machine_health import registry
from machine_health.archive.client import PREDICTIONS, ensure_indexes_sync
from machine_health.archive.records import PredictionRecord, encode_samples
from machine_health.config import Settings
from machine_health.domains.vibration.monitoring import training_reference
from tests.support.models import TrainedModels, register_version
from tests.support.paths import AIRFLOW_BIN, REPO, VENV_BIN

PROBE = REPO / "tests" / "dags" / "airflow_probe.py"
CLI = VENV_BIN / "machine-health"
DOMAIN = "vibration"


def initial_champion(settings: Settings, models: TrainedModels) -> str:
    """Version 1 @champion: the session's trained vibration bundle and its drift reference,
    copied into `settings`' registry as training would log them (no retraining here)."""
    source = settings.model_copy(update={"mlflow_tracking_uri": models.tracking_uri})
    bundle, _ = registry.load(source, DOMAIN, version=models.vibration_version)
    reference = training_reference(settings.data_dir, bundle.config)
    return register_version(settings, bundle, "initial-vibration", DOMAIN,
                            aliases=(registry.CHAMPION,), reference=reference)  # fmt: skip


def archive(settings: Settings, windows: Any, labels: list[str], at: datetime) -> int:
    """Archived, labelled predictions of real windows, as the API stores them."""
    docs = []
    for i, (window, label) in enumerate(zip(windows.windows, labels, strict=True)):
        created = at + timedelta(seconds=i)
        record = PredictionRecord(
            prediction_id=uuid.uuid4().hex, domain=DOMAIN,
            asset_id=f"cwru-{Path(str(windows.sources[i])).stem[:40]}".replace("@", "-"),
            input={"asset_id": "x", "samples": encode_samples(window),
                   "sample_rate": windows.sample_rate, "rpm": float(windows.rpm[i]),
                   "channel": "accelerometer", "n_samples": len(window)},
            output={}, model_name=settings.model_name(DOMAIN), model_version="1",
            user="operator", request_id=uuid.uuid4().hex, latency_ms=1.0, created_at=created,
            label=label, labelled_at=created + timedelta(minutes=5), label_source="feedback",
        )  # fmt: skip
        docs.append(record.to_document())
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        db = client[settings.mongodb_db]
        ensure_indexes_sync(db)
        db[PREDICTIONS].insert_many(docs)
    finally:
        client.close()
    return len(docs)


def served(url: str, domain: str = DOMAIN) -> str | None:
    """The version of `domain`'s model the API at `url` serves (None: none)."""
    model = httpx.get(f"{url}/version", timeout=10).json()["models"].get(domain)
    return model and model["version"]


def xcom(task: dict[str, Any]) -> dict[str, Any]:
    """A step's XCom: the JSON line the CLI printed (parsed by Airflow, or still text)."""
    value = task["xcom"]
    return json.loads(value.strip().splitlines()[-1]) if isinstance(value, str) else value


def workspace_of(settings: Settings, run_id: str) -> Path:
    """The run's workspace directory (as `pipeline.workspace.safe_run_id` names it)."""
    return settings.runs_dir / DOMAIN / run_id.replace(":", "_").replace("+", "_")


def dag_env(airflow_env: dict[str, str], settings: Settings) -> dict[str, str]:
    """What a local-mode DAG run needs: Airflow's home, the project's settings, its CLI."""
    return {
        **airflow_env,
        **settings.as_env(),
        "MH_EXECUTION_MODE": "local",
        "MH_PIPELINE_CLI": str(CLI),
    }


def run_dag(
    env: dict[str, str], when: datetime, kind: str = "scheduled", dag_id: str = "retrain_vibration"
) -> dict[str, Any]:
    """One `dag.test()` run: its state, run id, and per task state, XCom and tries."""
    out = subprocess.run(
        [str(AIRFLOW_BIN / "python"), str(PROBE), "test", dag_id, when.isoformat(), kind],
        env=env, capture_output=True, text=True, timeout=900, check=False, cwd=REPO,
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"the DAG run did not complete:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["log"] = out.stdout[-6000:] + out.stderr[-6000:]
    return result
