"""The UI's tests: one real API (uvicorn, real store, real models) for the whole package, with an
archive seeded through the API's own endpoints from the real data, and monitoring reports
computed from that archive by the monitoring functions; and, for the retraining page, a real
local Airflow api-server with a run of a retrain DAG.

The store (`SeededApi.db`) and Airflow's REST API are the truth the tests compare the UI with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database
from streamlit.testing.v1 import AppTest

from machine_health import local_airflow
from machine_health.airflow_client import AirflowClient
from machine_health.config import Settings
from machine_health.stack import Supervisor
from tests.conftest import REPO, free_port, make_settings, start_uvicorn
from tests.integration.conftest import (
    TrainedModels,
    api_settings,
    create_users,
    login,
    pristine_models,
)

APP = REPO / "src" / "machine_health" / "ui" / "app.py"
VIBRATION_WINDOWS = 40
VIBRATION_LABELLED = 30
TURBOFAN_UNITS = 3
TURBOFAN_CYCLES = 35
#: AppTest's per-run timeout: pages wait for the API (the projection computes features).
RUN_TIMEOUT_S = 60


@dataclass(frozen=True)
class SeededApi:
    url: str
    settings: Settings
    db: Database
    headers: dict[str, dict[str, str]]  # role -> Authorization header
    failed_unit: str  # the turbofan unit whose failure is known
    open_unit: str  # a unit still running (no true RUL)

    def token(self, role: str) -> str:
        return self.headers[role]["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    # The Models page lists every version: the UI needs the registry as training left it.
    return pristine_models(tmp_path_factory)


def _post(url: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    response = httpx.post(url + path, json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _seed(url: str, settings: Settings, headers: dict[str, str]) -> tuple[str, str]:
    from machine_health.simulate import vibration_windows

    windows = vibration_windows(settings.data_dir / "cwru", VIBRATION_WINDOWS)
    answers = _post(
        url, "/predict/vibration/batch", {"items": [w["body"] for w in windows]}, headers
    )["items"]
    for window, answer in list(zip(windows, answers, strict=True))[:VIBRATION_LABELLED]:
        body = {"prediction_id": answer["prediction_id"], "label": window["label"]}
        _post(url, "/feedback", body, headers)
    from machine_health.domains.turbofan.data import load_subset

    data = load_subset(settings.data_dir, "FD001")
    units = []
    for unit, true_rul in list(zip(data.test_units, data.rul, strict=True))[:TURBOFAN_UNITS]:
        rows = data.test[data.test["unit"] == unit].sort_values("cycle")
        unit_id = f"FD001-ui-u{int(unit):03d}"
        items = [
            {
                "unit_id": unit_id,
                "cycle": int(r["cycle"]),
                "settings": [float(r[f"setting_{i}"]) for i in range(1, 4)],
                "sensors": [float(r[f"sensor_{i}"]) for i in range(1, 22)],
            }
            for _, r in rows.head(TURBOFAN_CYCLES).iterrows()
        ]
        _post(url, "/predict/turbofan/batch", {"items": items}, headers)
        units.append((unit_id, int(rows["cycle"].max()) + int(true_rul)))
    failed_unit, failure_cycle = units[0]
    _post(url, f"/assets/{failed_unit}/failure", {"failure_cycle": failure_cycle}, headers)
    return failed_unit, units[1][0]


def _reports(settings: Settings) -> None:
    from machine_health.monitoring.drift import run_drift
    from machine_health.monitoring.performance import run_performance

    now = datetime.now(UTC) + timedelta(seconds=1)
    for moment in (now - timedelta(minutes=30), now):
        run_drift(settings, "vibration", window=timedelta(hours=24), now=moment)
        for domain in ("vibration", "turbofan"):
            run_performance(settings, domain, now=moment)


@pytest.fixture(scope="package")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, trained_models: TrainedModels
) -> Iterator[SeededApi]:
    tmp = tmp_path_factory.mktemp("ui-api")
    settings = api_settings(tmp, store_uri, trained_models)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        headers = {role: login(server.url, role) for role in ("admin", "operator", "viewer")}
        failed_unit, open_unit = _seed(server.url, settings, headers["operator"])
        _reports(settings)
        yield SeededApi(
            server.url, settings, client[settings.mongodb_db], headers, failed_unit, open_unit
        )
    finally:
        server.stop()
        client.drop_database(settings.mongodb_db)
        client.close()


@dataclass(frozen=True)
class LiveAirflow:
    url: str
    password: str
    client: AirflowClient
    dag_id: str  # the DAG that has a finished run
    run_id: str


#: the run `live_airflow` makes: its `check` finds no new label and stops it (seconds, no training)
AIRFLOW_DAG = "retrain_vibration"
AIRFLOW_REASON = "UI test run"


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


def app_as(api: SeededApi, role: str | None, page: str | None = None, **state: Any) -> AppTest:
    """The UI signed in as `role` (None: signed out), run once, on `page` (views/<page>.py)."""
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    at.session_state["api_url"] = api.url
    if role is not None:
        at.session_state["token"] = api.token(role)
        at.session_state["role"] = role
        at.session_state["username"] = role
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, list[str]]:
    """Label -> the values of every metric with that label, in page order."""
    out: dict[str, list[str]] = {}
    for metric in at.metric:
        out.setdefault(metric.label, []).append(metric.value)
    return out
