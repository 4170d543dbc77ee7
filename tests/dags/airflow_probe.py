"""Run INSIDE `.venv-airflow` by the DAG tests: parse the DAGs and print facts as JSON.

python airflow_probe.py dagbag            -> import errors, tags, retries, tasks per DAG
python airflow_probe.py pods <out_dir>    -> every KubernetesPodOperator's pod (dry run),
                                             as dicts, and as YAML files in <out_dir>, and
                                             the operators' on_finish_action
python airflow_probe.py test <dag> <when> [scheduled|manual]
                                          -> `dag.test` of one run: its state, and per task its
                                             state, XCom, try number, duration and
                                             earlier tries
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


def dagbag() -> dict:
    bag = DagBag(str(DAGS))
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tags": sorted(dag.tags),
            "retries": {t.task_id: t.retries for t in dag.tasks},
            "tasks": [t.task_id for t in dag.topological_sort()],
            "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "schedule": str(dag.schedule),
            "doc_md": bool(dag.doc_md),
            "operators": {t.task_id: type(t).__name__ for t in dag.tasks},
            "params": sorted(dag.params.keys()),
        }
    return {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": dags}


def pods(out_dir: Path) -> dict:
    import yaml
    from kubernetes.client import ApiClient

    out_dir.mkdir(parents=True, exist_ok=True)
    bag = DagBag(str(DAGS))
    rendered = {}
    operators = {}
    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            if type(task).__name__ != "KubernetesPodOperator":
                continue
            pod = task.build_pod_request_obj(context=None, dry_run=True)
            data = ApiClient().sanitize_for_serialization(pod)
            rendered[f"{dag_id}.{task.task_id}"] = data
            # What the pod spec does not show: the operator's own settings.
            operators[f"{dag_id}.{task.task_id}"] = {
                "on_finish_action": task.on_finish_action.value,
                "kubernetes_conn_id": task.kubernetes_conn_id,
            }
            (out_dir / f"{dag_id}.{task.task_id}.yaml").write_text(yaml.safe_dump(data))
    return {
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "pods": rendered,
        "operators": operators,
    }


def one_run(dag_id: str, when: str, kind: str = "scheduled") -> dict:
    """`dag.test` of one run; kind "manual" = no logical date, hence no data interval (as a run
    triggered from the UI or the REST API with `logical_date: null`)."""
    from datetime import datetime

    bag = DagBag(str(DAGS))
    dag = bag.dags[dag_id]
    moment = datetime.fromisoformat(when)
    run = dag.test(run_after=moment, logical_date=None if kind == "manual" else moment)
    tasks = {}
    earlier = earlier_tries(dag_id, run.run_id)
    for ti in run.get_task_instances():
        value = ti.xcom_pull(task_ids=ti.task_id) if ti.state == "success" else None
        tasks[ti.task_id] = {
            "state": str(ti.state), "xcom": value, "try_number": ti.try_number,
            "seconds": ti.duration,
            "earlier_tries": earlier.get(ti.task_id, []),
        }  # fmt: skip
    return {"state": str(run.state), "run_id": run.run_id, "tasks": tasks}


def earlier_tries(dag_id: str, run_id: str) -> dict[str, list[dict]]:
    """The tries Airflow archived before the last one (task_instance_history), per task."""
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstanceHistory)
            .where(TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run_id)
            .order_by(TaskInstanceHistory.try_number)
        ).all()
        tries: dict[str, list[dict]] = {}
        for row in rows:
            tries.setdefault(row.task_id, []).append(
                {"try_number": row.try_number, "state": str(row.state), "seconds": row.duration}
            )
    return tries


if __name__ == "__main__":
    action = sys.argv[1]
    if action == "dagbag":
        result = dagbag()
    elif action == "pods":
        result = pods(Path(sys.argv[2]))
    else:
        result = one_run(*sys.argv[2:5])
    print(json.dumps(result, default=str))
