"""Fixtures of the UI's tests: one real API (uvicorn, real store, real models) for the whole
package, with an archive seeded through the API's own endpoints from the real data and
monitoring reports computed from it (tests/support/ui.py); and, for the retraining page, a real
local Airflow api-server with a run of a retrain DAG.

The API serves `pristine_models` (the registry as training left it): the Models page lists
every version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pymongo import MongoClient

from machine_health import local_airflow
from machine_health.stack import Supervisor
from tests.support.models import TrainedModels, api_settings
from tests.support.paths import REPO
from tests.support.servers import free_port, start_uvicorn
from tests.support.settings import make_settings
from tests.support.ui import (
    AIRFLOW_DAG,
    AIRFLOW_REASON,
    LiveAirflow,
    SeededApi,
    compute_reports,
    seed_archive,
)
from tests.support.users import create_users, login


@pytest.fixture(scope="package")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, pristine_models: TrainedModels
) -> Iterator[SeededApi]:
    tmp = tmp_path_factory.mktemp("ui-api")
    settings = api_settings(tmp, store_uri, pristine_models)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        headers = {role: login(server.url, role) for role in ("admin", "operator", "viewer")}
        failed_unit, open_unit = seed_archive(server.url, settings, headers["operator"])
        compute_reports(settings)
        yield SeededApi(
            server.url, settings, client[settings.mongodb_db], headers, failed_unit, open_unit
        )
    finally:
        server.stop()
        client.drop_database(settings.mongodb_db)
        client.close()


@pytest.fixture(scope="module")
def live_airflow(tmp_path_factory: pytest.TempPathFactory, store_uri: str) -> Iterator[LiveAirflow]:
    """A real Airflow 3 api-server (local_airflow, as `make run` starts it, minus the scheduler
    and dag-processor) whose metadata DB holds the retrain DAGs and one finished run of
    AIRFLOW_DAG, executed by `airflow dags test`. The run's steps use their own empty archive
    database and registry: nothing the other UI tests read changes."""
    tmp = tmp_path_factory.mktemp("ui-airflow")
    settings = make_settings(tmp, store_uri, airflow_port=free_port())
    base_env = {**os.environ, **settings.as_env(), "MH_RETRY_DELAY_S": "1"}
    supervisor = Supervisor(tmp / "logs")
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        env, password = local_airflow.prepare(settings, REPO, base_env)
        # the api-server boots (about 10 s) while the run executes: it only reads the DB then
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(
                local_airflow.launch, settings, supervisor, REPO, env, password, ("api-server",)
            )
            local_airflow.run_once(REPO, env, AIRFLOW_DAG, {"reason": AIRFLOW_REASON})
            airflow = starting.result()
        (run,) = airflow.client.runs(AIRFLOW_DAG)
        run_id = run["dag_run_id"]
        yield LiveAirflow(airflow.base_url, password, airflow.client, AIRFLOW_DAG, run_id)
    finally:
        supervisor.stop_all()
        client.drop_database(settings.mongodb_db)
        client.close()
