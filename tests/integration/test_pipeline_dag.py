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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from machine_health import registry
from machine_health.domains.vibration import workflow
from tests.support.dag_runs import (
    DOMAIN,
    archive,
    dag_env,
    initial_champion,
    run_dag,
    served,
    workspace_of,
    xcom,
)
from tests.support.models import TrainedModels
from tests.support.settings import make_settings


def test_retrain_dag_end_to_end(
    tmp_path: Path,
    store_uri: str,
    uvicorn_server: Any,
    airflow_env: dict[str, str],
    trained_models: TrainedModels,
) -> None:
    settings = make_settings(tmp_path, store_uri, retrain_min_new_labels=20)
    v1 = initial_champion(settings, trained_models)
    replicas = [uvicorn_server(settings), uvicorn_server(settings)]
    urls = [r.url for r in replicas]
    assert [served(u) for u in urls] == [v1, v1]
    settings = settings.model_copy(update={"serving_urls": urls})
    env = dag_env(airflow_env, settings)

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
    gate = json.loads((workspace_of(settings, first["run_id"]) / "gate.json").read_text())
    assert gate["passed"] and gate["headline"]["facts"]["eval_windows_excluded"] > 0
    # Judged on both slices: the reference carve-out of the training portion, and the most
    # recent fifth of each recording's archived windows, held out of this retrain.
    judged = {(r["slice"], r["metric"]) for r in gate["metrics"] if r.get("interval")}
    assert judged == {(s, m) for s in ("reference", "field") for m in ("recall_at_fpr", "macro_f1")}
    assert gate["field"]["windows"] > 0 and gate["reference"]["windows"] > 0

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
    # The field slice holds the same wrong labels: the frozen reference is what refuses it.
    assert any(r["slice"] == "reference" and not r["passed"] for r in evaluated["rows"])
    register = xcom(third["tasks"]["register"])
    v3 = register["version"]
    assert not register["promoted"] and v3 not in (v1, v2)
    assert registry.aliases(settings, DOMAIN) == {"champion": v2, "challenger": v3, "previous": v1}
    assert xcom(third["tasks"]["reload"])["reloaded"] is False
    assert [served(u) for u in urls] == [v2, v2]
