"""The retraining page against a real local Airflow 3 api-server (`live_airflow`): the DAGs, runs,
states and per-step results it shows are the ones Airflow's REST API reports; an admin's trigger
creates a run in Airflow; a viewer has no trigger button."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from machine_health.domains import DOMAINS
from machine_health.ui.views.retraining import result_text
from tests.support.ui import AIRFLOW_REASON, LiveAirflow, SeededApi, app_as, metrics

pytestmark = pytest.mark.slow
STEPS = ("extract", "validate", "rescale", "train", "evaluate", "register", "reload")


@pytest.fixture
def airflow(live_airflow: LiveAirflow, monkeypatch: pytest.MonkeyPatch) -> LiveAirflow:
    """The UI configured for the live Airflow (AppTest runs the app in this process)."""
    monkeypatch.setenv("MH_AIRFLOW_URL", live_airflow.url)
    monkeypatch.setenv("MH_AIRFLOW_PASSWORD", live_airflow.password)
    return live_airflow


def _tab(at: object, label: str) -> object:
    return next(t for t in at.tabs if t.label == label)  # type: ignore[attr-defined]


def test_retraining_page_shows_airflows_dags_runs_and_steps(
    seeded: SeededApi, airflow: LiveAirflow
) -> None:
    started = time.monotonic()
    client = airflow.client
    at = app_as(seeded, "viewer", "retraining")
    retrain_dags = sorted(d["dag_id"] for d in client.dags() if d["dag_id"].startswith("retrain"))
    # one DAG file per registered domain, and the on-demand one
    expected = sorted(["retrain_on_demand", *(f"retrain_{name}" for name in DOMAINS)])
    assert retrain_dags == expected
    # the DAG that ran first, then the others
    assert airflow.dag_id in expected
    assert [t.label for t in at.tabs] == [
        airflow.dag_id,
        *(dag_id for dag_id in expected if dag_id != airflow.dag_id),
    ]
    assert any(airflow.url in c.value for c in at.caption)

    tab = _tab(at, airflow.dag_id)
    (run,) = client.runs(airflow.dag_id)
    assert run["state"] == "success"
    runs = tab.dataframe[0].value
    assert runs[["run", "state", "reason"]].values.tolist() == [
        [airflow.run_id, "success", AIRFLOW_REASON]
    ]
    assert metrics(tab) == {"Recent runs": ["1"], "Succeeded": ["1"], "Failed": ["0"]}

    steps = tab.dataframe[1].value.set_index("step")
    tasks = {t["task_id"]: t for t in client.task_instances(airflow.dag_id, airflow.run_id)}
    assert set(steps.index) == set(tasks) == {"check", "enough_new_data", *STEPS}
    assert steps["state"].to_dict() == {k: t["state"] for k, t in tasks.items()}
    # nothing new in the run's archive: `check` says no, the rest of the run is skipped
    assert steps.loc["check", "state"] == steps.loc["enough_new_data", "state"] == "success"
    assert set(steps.drop(["check", "enough_new_data"])["state"]) == {"skipped"}
    check = client.result(airflow.dag_id, airflow.run_id, "check")
    assert steps.loc["check", "result"] == result_text(check)
    assert '"retrain":false' in steps.loc["check", "result"]
    assert pd.isna(steps.loc["extract", "result"])  # a skipped step returned nothing

    # the DAGs that never ran say so
    assert "has not run yet" in _tab(at, "retrain_turbofan").info[0].value
    # a viewer may look, not trigger
    assert not [b for b in at.button if b.key == "trigger_run"]
    print(f"retraining page against live Airflow: {time.monotonic() - started:.1f}s")


def test_admin_trigger_creates_a_run_in_airflow(seeded: SeededApi, airflow: LiveAirflow) -> None:
    client = airflow.client
    before = {r["dag_run_id"] for r in client.runs(airflow.dag_id)}
    at = app_as(seeded, "admin", "retraining")
    at.selectbox(key="trigger_dag").select(airflow.dag_id).run()
    at.button(key="trigger_run").click().run()
    assert not at.exception
    (message,) = [s.value for s in at.success]
    created = {r["dag_run_id"]: r for r in client.runs(airflow.dag_id)}
    (new_id,) = set(created) - before
    assert f"run {new_id} queued" in message
    assert created[new_id]["conf"]["reason"] == "triggered from the UI by admin"
    assert created[new_id]["run_type"] == "manual"
    # the page, run again, lists the new run as Airflow reports it
    at.run()
    runs = _tab(at, airflow.dag_id).dataframe[0].value.set_index("run")
    assert runs.loc[new_id, "state"] == created[new_id]["state"]
    assert len(runs) == len(created) == len(before) + 1
