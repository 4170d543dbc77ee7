"""Airflow on one machine for `make run`: loopback api-server, scheduler and dag-processor.

Runs from `.venv-airflow` (its own pinned environment) with AIRFLOW_HOME under var/airflow and a
SQLite metadata DB. `airflow standalone` would bind some ports on all interfaces, so the three
processes are started one by one on 127.0.0.1. The admin password is generated once and printed.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machine_health.airflow_client import AirflowClient
from machine_health.config import Settings
from machine_health.errors import ConfigurationError, PipelineError

if TYPE_CHECKING:
    from machine_health.stack import Supervisor

logger = logging.getLogger(__name__)

RETRAIN_TIMEOUT_S = 20 * 60
FAILED_TASK_STATES = ("failed", "upstream_failed")
#: what `make run` starts; the UI tests start the api-server alone (no run to schedule).
PROCESSES = ("api-server", "scheduler", "dag-processor")


@dataclass
class LocalAirflow:
    base_url: str
    password: str
    client: AirflowClient

    def retrain(self, domain: str) -> str:
        """Trigger `retrain_<domain>` now and wait for it; returns the run's final state.

        A run that does not succeed is logged as an error naming its failed steps and where
        their logs are.
        """
        dag_id = f"retrain_{domain}"
        self.client.wait_for_dag(dag_id)
        run_id = self.client.trigger(dag_id, conf={"reason": "make run demo"})
        logger.info(
            "triggered %s run %s: watch it at %s/dags/%s", dag_id, run_id, self.base_url, dag_id
        )
        state = self.client.wait_for_run(dag_id, run_id, RETRAIN_TIMEOUT_S)["state"]
        if state != "success":
            tasks = self.client.task_instances(dag_id, run_id)
            failed = [t["task_id"] for t in tasks if t.get("state") in FAILED_TASK_STATES]
            logger.error(
                "%s run %s ended %s (failed steps: %s); logs: %s/dags/%s/runs/%s",
                dag_id, run_id, state, ", ".join(failed) or "-", self.base_url, dag_id, run_id,
            )  # fmt: skip
        return state


def airflow_env(settings: Settings, repo: Path, base_env: dict[str, str]) -> dict[str, str]:
    """Environment of every Airflow process: its home, our DAGs, local execution of the steps."""
    home = (settings.var_dir / "airflow").resolve()
    return {
        **base_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
            f"http://127.0.0.1:{settings.airflow_port}/execution/"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        # The DAGs run the steps on this machine with our CLI (no cluster here).
        "MH_EXECUTION_MODE": "local",
        "MH_PIPELINE_CLI": str(repo / ".venv" / "bin" / "machine-health"),
    }


def _password(home: Path) -> str:
    path = home / "passwords.json"
    if path.exists():
        return json.loads(path.read_text())["admin"]
    from machine_health.stack import generated_password

    password = generated_password()
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"admin": password}))
    path.chmod(0o600)
    return password


def _airflow(repo: Path) -> Path:
    airflow = repo / ".venv-airflow" / "bin" / "airflow"
    if not airflow.exists():
        raise ConfigurationError(f"{airflow} is missing: run `make install`")
    return airflow


def prepare(settings: Settings, repo: Path, base_env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment of every Airflow process and the admin password, the DB migrated."""
    airflow = _airflow(repo)
    env = airflow_env(settings, repo, base_env)
    password = _password(Path(env["AIRFLOW_HOME"]))
    migrate = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    if migrate.returncode != 0:
        raise PipelineError(f"airflow db migrate failed: {migrate.stderr[-1500:]}")
    return env, password


def run_once(repo: Path, env: dict[str, str], dag_id: str, conf: dict[str, Any]) -> None:
    """One run of `dag_id` now, its steps executed by `airflow dags test` itself (`dag.test()`:
    no scheduler needed). It also writes every DAG of the folder to the metadata DB, so an
    api-server lists them without a dag-processor (the UI tests and screenshots use this)."""
    out = subprocess.run(
        [str(_airflow(repo)), "dags", "test", dag_id, "--conf", json.dumps(conf)],
        env=env, capture_output=True, text=True, check=False, timeout=RETRAIN_TIMEOUT_S,
    )  # fmt: skip
    if out.returncode != 0:
        log = (out.stdout + out.stderr)[-3000:]
        raise PipelineError(f"airflow dags test {dag_id} failed: {log}")


def launch(
    settings: Settings,
    supervisor: Supervisor,
    repo: Path,
    env: dict[str, str],
    password: str,
    processes: tuple[str, ...] = PROCESSES,
) -> LocalAirflow:
    """Start `processes` (of PROCESSES) with a prepared environment; wait for the api-server."""
    from machine_health.stack import wait_http

    airflow = str(_airflow(repo))
    port = str(settings.airflow_port)
    argv = {
        "api-server": [airflow, "api-server", "-H", "127.0.0.1", "-p", port],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
    }
    for process in processes:
        supervisor.start(f"airflow-{process.removesuffix('-server')}", argv[process], env)
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/api/v2/monitor/health", 180, supervisor)
    return LocalAirflow(base_url, password, AirflowClient(base_url, "admin", password))


def start(
    settings: Settings, supervisor: Supervisor, repo: Path, base_env: dict[str, str]
) -> LocalAirflow:
    """Migrate the metadata DB, start the three processes and log in."""
    env, password = prepare(settings, repo, base_env)
    return launch(settings, supervisor, repo, env, password)
