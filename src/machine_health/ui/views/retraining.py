"""Retraining: recent runs of the retrain DAGs (state, durations, per-step results); trigger one.

Read from Airflow's REST API (v2) with `machine_health.airflow_client`; the trigger button is
for admins.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from machine_health.airflow_client import AirflowClient
from machine_health.errors import PipelineError
from machine_health.ui import common
from machine_health.ui.client import airflow_client

RUNS_SHOWN = 15
_PREFIX = "retrain"


def _duration(item: dict[str, Any]) -> float | None:
    if item.get("duration") is not None:
        return round(float(item["duration"]), 1)
    start, end = item.get("start_date"), item.get("end_date")
    if not start or not end:
        return None
    return round((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds(), 1)


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r["dag_run_id"],
                "state": r.get("state"),
                "type": r.get("run_type"),
                "started (UTC)": r.get("start_date"),
                "duration (s)": _duration(r),
                "reason": (r.get("conf") or {}).get("reason"),
            }
            for r in runs
        ]
    )


#: keys of a step's result that repeat what the table already says (which step of which run)
_IDENTITY = ("step", "domain", "run_id", "interval")


def result_text(value: Any) -> str | None:
    """A step's return value as one line: the CLI's JSON line compacted (without the keys that
    name the step and run), else its text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return value
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in _IDENTITY}
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def quarantine_note(value: Any) -> str | None:
    """What the validate step quarantined (rows left out of training, per rule), if anything."""
    if isinstance(value, str):
        try:
            value = json.loads(value.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
    if not isinstance(value, dict) or not value.get("quarantined"):
        return None
    rules = "; ".join(f"{rule}: {n}" for rule, n in (value.get("quarantine_reasons") or {}).items())
    ids = ", ".join(r["prediction_id"] for r in (value.get("quarantined_rows") or [])[:5])
    return (
        f"validate quarantined {value['quarantined']} row(s) that failed validation; the run "
        f"trained without them ({rules}). E.g. predictions {ids}; all are in the run's "
        "quarantine.json."
    )


def steps_table(tasks: list[dict[str, Any]], results: dict[str, Any]) -> pd.DataFrame:
    tasks = sorted(tasks, key=lambda t: t.get("start_date") or "9999")
    return pd.DataFrame(
        [
            {
                "step": t["task_id"],
                "state": t.get("state"),
                "duration (s)": _duration(t),
                "try": t.get("try_number"),
                "started (UTC)": t.get("start_date"),
                "result": result_text(results.get(t["task_id"])),
            }
            for t in tasks
        ]
    )


def explain_setup() -> None:
    st.info(
        "Airflow is not configured for this UI. Set `MH_AIRFLOW_URL` (e.g. "
        "http://127.0.0.1:8080), `MH_AIRFLOW_USERNAME` and `MH_AIRFLOW_PASSWORD` in the UI's "
        "environment and restart it. `make run` starts a local Airflow and the UI finds it by "
        "itself (its generated password is in var/airflow/passwords.json)."
    )


def by_latest_run(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """DAG ids, the one that started a run last first (the page opens on recent activity);
    DAGs that never ran last, alphabetically."""
    latest = {d: max((r.get("start_date") or "" for r in rs), default="") for d, rs in runs.items()}
    return sorted(sorted(runs), key=latest.__getitem__, reverse=True)


def show_dag(client: AirflowClient, dag_id: str, runs: list[dict[str, Any]]) -> None:
    if not runs:
        st.info(f"{dag_id} has not run yet: wait for its schedule or trigger it.")
        return
    states = pd.Series([r.get("state") for r in runs]).value_counts()
    cols = st.columns(3)
    cols[0].metric("Recent runs", len(runs))
    cols[1].metric("Succeeded", int(states.get("success", 0)))
    cols[2].metric("Failed", int(states.get("failed", 0)))
    st.dataframe(runs_table(runs), hide_index=True)
    run_id = st.selectbox("Steps of run", [r["dag_run_id"] for r in runs], key=f"run_{dag_id}")
    tasks = client.task_instances(dag_id, run_id)
    # only a finished step has a result; one request each (a run has nine steps at most)
    results = {
        t["task_id"]: client.result(dag_id, run_id, t["task_id"])
        for t in tasks
        if t.get("state") == "success"
    }
    st.dataframe(steps_table(tasks, results), hide_index=True)
    if note := quarantine_note(results.get("validate")):
        st.warning(note)


def trigger(client: AirflowClient, dag_ids: list[str]) -> None:
    st.subheader("Trigger a retrain (admin)")
    cols = st.columns([2, 1])
    dag_id = cols[0].selectbox("DAG", dag_ids, key="trigger_dag")
    if cols[1].button("Trigger now", key="trigger_run"):
        reason = f"triggered from the UI by {st.session_state.get('username')}"
        run_id = client.trigger(dag_id, conf={"reason": reason})
        st.success(f"{dag_id}: run {run_id} queued")


def render() -> None:
    st.title("Retraining")
    client = airflow_client(common.settings())
    if client is None:
        explain_setup()
        return
    st.caption(f"Airflow: {client.base_url}")
    try:
        with st.spinner("Asking Airflow..."):
            dag_ids = [d["dag_id"] for d in client.dags() if d["dag_id"].startswith(_PREFIX)]
            runs = {d: client.runs(d, limit=RUNS_SHOWN) for d in dag_ids}
        if not dag_ids:
            st.info("Airflow knows no retrain DAG yet: check its dag-processor and airflow/dags/.")
            return
        dag_ids = by_latest_run(runs)
        for dag_id, tab in zip(dag_ids, st.tabs(dag_ids), strict=True):
            with tab:
                show_dag(client, dag_id, runs[dag_id])
        if common.is_admin():
            trigger(client, dag_ids)
    except (PipelineError, httpx.HTTPError) as exc:
        st.error(f"Airflow at {client.base_url} did not answer: {exc}")


render()
