"""Fault 4: pipeline steps SIGKILLed mid-run inside a real DAG run, and Airflow retrying them.

One `dag.test()` run of `retrain_vibration` in local execution mode (tests/support/
dag_runs.py) against a real store, a real MLflow store whose v1 @champion is the session's real
vibration model, and a real API replica. While the run goes, `StepKiller` threads in THIS
process watch for the step processes of this run (the `machine-health pipeline <step>` process
whose environment holds this scenario's own `MH_VAR_DIR`: never anyone else's) and SIGKILL:
- `extract` while it writes its Parquet snapshot (the temporary file is open, no footer yet);
- `train` while it trains (its MLflow run is open and its parameters logged, no result yet).
The BashOperator sees exit code -9/137 and fails the try; with `retries=2` the task goes
`up_for_retry`, and `dag.test()` itself runs it again in the same DAG run: its loop asks
`DagRun.update_state` for schedulable task instances, and `up_for_retry` is one of
`SCHEDULEABLE_STATES` once `NotInRetryPeriodDep` passes (`MH_RETRY_DELAY_S=1`); the retry gets
try_number 2, and the killed try is archived in `task_instance_history`. No second dag.test,
no clear: this is Airflow's own retry.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.base import BUNDLE_MANIFEST
from machine_health.domains.vibration import workflow
from machine_health.pipeline import lineage
from machine_health.pipeline.extract import MANIFEST, SNAPSHOT
from machine_health.pipeline.workspace import sha256_of
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
from tests.support.reliability.harness import Report
from tests.support.servers import Server, start_uvicorn
from tests.support.settings import make_settings

KILLED_STEPS = ("extract", "train")


def _is_step(pid: int, step: str) -> bool:
    try:
        return f"\0pipeline\0{step}\0".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _step_pids(step: str, var_dir: str) -> list[int]:
    """Live `machine-health pipeline <step>` processes whose MH_VAR_DIR is `var_dir`."""
    wanted_env = f"\0MH_VAR_DIR={var_dir}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not _is_step(int(entry), step):
            continue
        try:
            environ = b"\0" + Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if wanted_env in environ:
            pids.append(int(entry))
    return pids


class StepKiller(threading.Thread):
    """SIGKILL the first process of `step` of this scenario once `ready()` says it is mid-work.

    `ready()` returns evidence of the work in progress (kept in the figures) or None; it is
    polled every `poll_s` while the process lives (the process itself is looked for every
    0.2 s: a step spends longer than that importing). Kills at most once: the retry Airflow
    starts afterwards runs untouched.
    """

    def __init__(
        self, step: str, var_dir: str, ready: Callable[[], Any], *, poll_s: float = 0.05,
        timeout_s: float = 600,
    ) -> None:  # fmt: skip
        super().__init__(name=f"kill-{step}", daemon=True)
        self.step, self.var_dir, self.ready = step, var_dir, ready
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.stopped = threading.Event()
        self.pid: int | None = None
        self.killed: dict[str, Any] | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.stopped.is_set() and time.monotonic() < deadline:
            if self.pid is None:
                pids = _step_pids(self.step, self.var_dir)
                if not pids:
                    time.sleep(0.2)
                    continue
                self.pid = pids[0]
            if not _is_step(self.pid, self.step):
                return  # it ended before it was caught mid-work
            evidence = self.ready()
            if evidence is not None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    return  # it ended in between: not caught mid-work
                self.killed = {"pid": self.pid, "at": time.time(), "evidence": evidence}
                return
            time.sleep(self.poll_s)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def _writing_snapshot(settings: Settings) -> Callable[[], Any]:
    """Evidence that extract is writing: its temporary Parquet file exists (no footer yet)."""

    def ready() -> Any:
        for tmp in (settings.runs_dir / DOMAIN).glob(f"*/.{SNAPSHOT}.tmp"):
            try:
                return {"partial_file": tmp.name, "bytes": tmp.stat().st_size}
            except OSError:
                continue
        return None

    return ready


def _train_runs(settings: Settings) -> list[Any]:
    """MLflow runs the train step opened (tagged with a pipeline run id), oldest first."""
    client = MlflowClient(settings.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="tags.pipeline_run_id LIKE '%'")
    return sorted(runs, key=lambda r: r.info.start_time)


def _training(settings: Settings) -> Callable[[], Any]:
    """Evidence that train is training: its MLflow run is open with its parameters logged."""

    def ready() -> Any:
        for run in _train_runs(settings):
            if run.info.status == "RUNNING" and "snapshot_sha256" in run.data.params:
                return {"mlflow_run_id": run.info.run_id}
        return None

    return ready


def run_pipeline_kill(
    root: Path,
    store_uri: str,
    models: TrainedModels,
    airflow_env: dict[str, str],
    *,
    every: int = 4,
) -> Report:
    """Fault 4: one DAG run with `extract` and `train` SIGKILLed mid-work, retried by Airflow.

    `every`: archive one real CWRU test window (2048 samples, not overlapping) in `every`.
    """
    settings = make_settings(root, store_uri, retrain_min_new_labels=20)
    v1 = initial_champion(settings, models)
    replica: Server = start_uvicorn(settings, root / "logs", timeout_s=120)
    violations: list[str] = []
    try:
        settings = settings.model_copy(update={"serving_urls": [replica.url]})
        served_before = served(replica.url)
        test = workflow.load_portion(settings.data_dir, "test", hop=workflow.WINDOW)
        picked = test.subset(np.arange(len(test)) % every == 0)
        at = datetime(2026, 2, 27, tzinfo=UTC)
        archived = archive(settings, picked, picked.labels.tolist(), at)
        var_dir = settings.as_env()["MH_VAR_DIR"]
        killers = {
            # the snapshot is written in well under a second: look often
            "extract": StepKiller("extract", var_dir, _writing_snapshot(settings), poll_s=0.002),
            "train": StepKiller("train", var_dir, _training(settings)),
        }
        for killer in killers.values():
            killer.start()
        started = time.monotonic()
        try:
            result = run_dag(dag_env(airflow_env, settings), datetime(2026, 3, 1, tzinfo=UTC))
        finally:
            for killer in killers.values():
                killer.stop()
        seconds = time.monotonic() - started
        served_after = served(replica.url)
    finally:
        replica.stop()

    tasks = result["tasks"]
    run_versions = [
        v["version"]
        for v in lineage.pipeline_versions(settings, DOMAIN)
        if v["tags"].get(lineage.TAG_RUN_ID) == result["run_id"]
    ]
    aliases = registry.aliases(settings, DOMAIN)
    ws = workspace_of(settings, result["run_id"])
    figures: dict[str, Any] = {
        "runs": 1,
        "dag_state": result["state"],
        "run_id": result["run_id"],
        "archived_windows": archived,
        "tries": {step: tasks[step]["try_number"] for step in tasks},
        "step_seconds": {s: round(t["seconds"] or 0.0, 1) for s, t in tasks.items()},
        "earlier_tries": {s: tasks[s]["earlier_tries"] for s in tasks if tasks[s]["earlier_tries"]},
        "killed": {s: k.killed for s, k in killers.items()},
        "versions_registered": len(run_versions),
        "versions_total": len(registry.list_versions(settings, DOMAIN)),
        "aliases": aliases,
        "served": [served_before, served_after],
        "seconds": round(seconds, 1),
    }
    if result["state"] != "success":
        violations.append(f"the DAG run ended {result['state']}")
        return Report("pipeline steps killed, run retried", figures, violations)
    for step in KILLED_STEPS:
        if killers[step].killed is None:
            violations.append(f"{step} was never caught mid-work (the fault was too mild)")
        elif tasks[step]["try_number"] < 2 or not tasks[step]["earlier_tries"]:
            violations.append(f"{step} was killed but Airflow recorded no earlier try")
    figures.update(_consistency(settings, ws, tasks, run_versions, killers, violations))
    if len(run_versions) != 1:
        violations.append(f"the run registered {len(run_versions)} versions: {run_versions}")
    new = run_versions[0] if run_versions else None
    expected = {registry.CHAMPION: new, registry.CHALLENGER: new, registry.PREVIOUS: v1}
    if aliases != expected:  # previous = v1: the champion moved once, from v1 to the new one
        violations.append(f"aliases {aliases}, expected {expected}")
    if (served_before, served_after) != (v1, new):
        violations.append(f"the replica served {served_before} then {served_after}, not {new}")
    return Report("pipeline steps killed, run retried", figures, violations)


def _consistency(
    settings: Settings,
    ws: Path,
    tasks: dict[str, Any],
    run_versions: list[str],
    killers: dict[str, StepKiller],
    violations: list[str],
) -> dict[str, Any]:
    """One snapshot whose manifest matches the file, one train result behind the one version."""
    extracted, trained = xcom(tasks["extract"]), xcom(tasks["train"])
    manifest = json.loads((ws / MANIFEST).read_text())
    file_sha = sha256_of(ws / SNAPSHOT)
    if not manifest["sha256"] == extracted["sha256"] == file_sha:
        violations.append(
            f"snapshot sha256: manifest {manifest['sha256']}, step {extracted['sha256']}, "
            f"file {file_sha}"
        )
    if not (ws / "challenger" / BUNDLE_MANIFEST).exists():
        violations.append("the train result names no saved challenger bundle")
    leftovers = sorted(p.name for p in ws.glob(".*.tmp"))
    if leftovers:
        violations.append(f"half-written files left in the workspace: {leftovers}")
    runs = _train_runs(settings)
    finished = [r.info.run_id for r in runs if r.info.status == "FINISHED"]
    if finished != [trained["mlflow_run_id"]]:
        violations.append(f"finished train runs {finished}, result {trained['mlflow_run_id']}")
    killed = (killers["train"].killed or {}).get("evidence", {}).get("mlflow_run_id")
    if killed == trained["mlflow_run_id"]:
        violations.append("the train result is the killed try's")
    if run_versions:
        version = next(
            v for v in registry.list_versions(settings, DOMAIN) if v["version"] == run_versions[0]
        )
        if version["run_id"] != trained["mlflow_run_id"]:
            violations.append(f"v{run_versions[0]} comes from run {version['run_id']}")
        if version["tags"].get(lineage.TAG_SNAPSHOT) != file_sha:
            violations.append("the registered version names another snapshot")
    return {
        "snapshot_rows": manifest["rows"],
        "train_mlflow_runs": {r.info.run_id: r.info.status for r in runs},
        "train_result_run": trained["mlflow_run_id"],
    }
