"""Fault 4 in a real DAG run: `extract` and `train` SIGKILLed mid-work, retried by Airflow.

See tests/support/reliability/pipeline_scenario.py for the set-up and for how the retry happens: the
killed try fails, the task goes `up_for_retry`, and `dag.test()`'s own scheduling loop runs it
again (try 2) in the SAME DAG run once the 1 s retry delay (`MH_RETRY_DELAY_S`) has passed.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.models import TrainedModels
from tests.support.reliability.pipeline_scenario import run_pipeline_kill


def test_killed_steps_retried_by_airflow_register_one_version(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels, airflow_env: dict[str, str]
) -> None:
    report = run_pipeline_kill(tmp_path, store_uri, trained_models, airflow_env)
    f = report.figures
    print(report.fault, f)
    assert report.violations == [], (report.violations, f)
    assert f["dag_state"] == "success"
    # each killed step: try 1 archived by Airflow as failed, try 2 succeeded
    for step in ("extract", "train"):
        assert f["killed"][step] is not None, step
        assert f["tries"][step] == 2, f["tries"]
        assert [t["try_number"] for t in f["earlier_tries"][step]] == [1]
        assert f["earlier_tries"][step][0]["state"] == "failed"  # archived by Airflow
    # the steps nobody killed ran once
    assert {f["tries"][s] for s in ("validate", "rescale", "evaluate", "register")} == {1}
    assert f["versions_registered"] == 1 and f["versions_total"] == 2  # v1 + this run's
    new = f["aliases"]["champion"]
    assert f["aliases"] == {"champion": new, "challenger": new, "previous": "1"}
    assert f["served"] == ["1", new]
    # the killed train try left its MLflow run open; only the retry's run finished
    # the killed try's run, left running by the kill, is ended by the retry
    assert sorted(f["train_mlflow_runs"].values()) == ["FINISHED", "KILLED"]
    assert f["train_mlflow_runs"][f["train_result_run"]] == "FINISHED"
