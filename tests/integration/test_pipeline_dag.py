"""End to end: `dag.test()` of `retrain_vibration` in local mode, against the real embedded store,
a real MLflow store and TWO real API replicas (uvicorn processes of `create_app`).

1. archived traffic (real CWRU test windows, correctly labelled) -> a new version is registered,
   promoted, and both replicas serve it;
2. a second run with no new labelled data changes nothing (short-circuited);
3. archived traffic with wrong labels (real fault windows reported as "normal") -> the worse
   challenger is registered as @challenger, NOT promoted, and no replica reloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pymongo import MongoClient

from machine_health import registry
from machine_health.archive.client import PREDICTIONS, ensure_indexes_sync
from machine_health.archive.records import PredictionRecord, encode_samples
from machine_health.config import Settings
from machine_health.domains.vibration import workflow
from tests.conftest import REPO, make_settings

AIRFLOW = REPO / ".venv-airflow" / "bin"
PROBE = REPO / "tests" / "dags" / "airflow_probe.py"
DOMAIN = "vibration"


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


def served(url: str) -> str | None:
    model = httpx.get(f"{url}/version", timeout=10).json()["models"].get(DOMAIN)
    return model and model["version"]


def xcom(task: dict[str, Any]) -> dict[str, Any]:
    """A step's XCom: the JSON line the CLI printed (parsed by Airflow, or still text)."""
    value = task["xcom"]
    return json.loads(value.strip().splitlines()[-1]) if isinstance(value, str) else value


def run_dag(env: dict[str, str], when: datetime, kind: str = "scheduled") -> dict[str, Any]:
    out = subprocess.run(
        [str(AIRFLOW / "python"), str(PROBE), "test", "retrain_vibration", when.isoformat(), kind],
        env=env, capture_output=True, text=True, timeout=900, check=False, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["log"] = out.stdout[-6000:] + out.stderr[-6000:]
    return result


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    if not (AIRFLOW / "airflow").exists():
        pytest.fail(f"{AIRFLOW / 'airflow'} is missing: run `make install`")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        "PYTHONPATH": str(REPO / "airflow" / "dags"),
        "MH_RETRY_DELAY_S": "1",  # a failing step fails the test fast (retries stay 2)
    }
    migrate = subprocess.run(
        [str(AIRFLOW / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return env


def test_retrain_dag_end_to_end(
    tmp_path: Path, store_uri: str, uvicorn_server: Any, airflow_env: dict[str, str]
) -> None:
    settings = make_settings(tmp_path, store_uri, retrain_min_new_labels=20)
    v1 = workflow.train_and_register(settings)["version"]
    replicas = [uvicorn_server(settings), uvicorn_server(settings)]
    urls = [r.url for r in replicas]
    assert [served(u) for u in urls] == [v1, v1]
    settings = settings.model_copy(update={"serving_urls": urls})
    env = {
        **airflow_env,
        **settings.as_env(),
        "MH_EXECUTION_MODE": "local",
        "MH_PIPELINE_CLI": str(REPO / ".venv" / "bin" / "machine-health"),
    }

    # 1. Real test windows of every recording (one in four), with their true labels.
    test = workflow.load_portion(settings.data_dir, "test", hop=workflow.WINDOW)
    picked = test.subset(np.arange(len(test)) % 4 == 0)
    archive(settings, picked, picked.labels.tolist(), datetime(2026, 2, 27, tzinfo=UTC))
    first = run_dag(env, datetime(2026, 3, 1, tzinfo=UTC))
    assert first["state"] == "success", first["log"]
    tasks = first["tasks"]
    assert {t["state"] for t in tasks.values()} == {"success"}
    register = xcom(tasks["register"])
    v2 = register["version"]
    assert register["promoted"] and v2 != v1
    assert registry.aliases(settings, DOMAIN) == {"champion": v2, "challenger": v2, "previous": v1}
    reload = xcom(tasks["reload"])
    assert set(reload["replicas"]) == set(urls)
    assert [served(u) for u in urls] == [v2, v2]
    gate = json.loads((settings.runs_dir / DOMAIN / first["run_id"].replace(":", "_").replace(
        "+", "_") / "gate.json").read_text())  # fmt: skip
    assert gate["passed"] and gate["evaluation"]["eval_windows_excluded"] > 0

    # 2. No new labelled data: the run stops at the check, nothing changes. This one is a
    # manual run (no logical date, so no data interval), as the UI or `make run` triggers it.
    versions_before = registry.list_versions(settings, DOMAIN)
    second = run_dag(env, datetime(2026, 3, 2, tzinfo=UTC), kind="manual")
    assert second["state"] == "success", second["log"]
    assert xcom(second["tasks"]["check"])["retrain"] is False
    assert second["tasks"]["enough_new_data"]["state"] == "success"
    assert {second["tasks"][s]["state"] for s in ("extract", "train", "reload")} == {"skipped"}
    assert len(registry.list_versions(settings, DOMAIN)) == len(versions_before)
    assert [served(u) for u in urls] == [v2, v2]

    # 3. Wrong feedback: real fault windows of the training portion reported as "normal".
    train = workflow.load_portion(settings.data_dir, "train", hop=workflow.WINDOW)
    faults = train.subset(train.is_fault)
    archive(settings, faults, ["normal"] * len(faults), datetime(2026, 3, 2, 6, tzinfo=UTC))
    third = run_dag(env, datetime(2026, 3, 3, tzinfo=UTC))
    assert third["state"] == "success", third["log"]
    evaluated = xcom(third["tasks"]["evaluate"])
    assert evaluated["passed"] is False
    register = xcom(third["tasks"]["register"])
    v3 = register["version"]
    assert not register["promoted"] and v3 not in (v1, v2)
    assert registry.aliases(settings, DOMAIN) == {"champion": v2, "challenger": v3, "previous": v1}
    assert xcom(third["tasks"]["reload"])["reloaded"] is False
    assert [served(u) for u in urls] == [v2, v2]
