"""The UI's tests: a real API seeded through its own endpoints from the real data, monitoring
reports computed from that archive, a live Airflow api-server, and the UI run by `AppTest`.

The fixtures (tests/ui/conftest.py) build these; the store (`SeededApi.db`) and Airflow's REST
API are the truth the tests compare the UI with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pymongo.database import Database
from streamlit.testing.v1 import AppTest

from machine_health.airflow_client import AirflowClient
from machine_health.config import Settings
from tests.support.paths import REPO

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


def post(url: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    response = httpx.post(url + path, json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def seed_archive(url: str, settings: Settings, headers: dict[str, str]) -> tuple[str, str]:
    from machine_health.domains.vibration.demo import test_windows as vibration_windows

    windows = vibration_windows(settings.data_dir / "cwru", VIBRATION_WINDOWS)
    answers = post(
        url, "/predict/vibration/batch", {"items": [w["body"] for w in windows]}, headers
    )["items"]
    for window, answer in list(zip(windows, answers, strict=True))[:VIBRATION_LABELLED]:
        body = {"prediction_id": answer["prediction_id"], "label": window["label"]}
        post(url, "/feedback", body, headers)
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
        post(url, "/predict/turbofan/batch", {"items": items}, headers)
        units.append((unit_id, int(rows["cycle"].max()) + int(true_rul)))
    failed_unit, failure_cycle = units[0]
    post(url, f"/assets/{failed_unit}/failure", {"failure_cycle": failure_cycle}, headers)
    return failed_unit, units[1][0]


def compute_reports(settings: Settings) -> None:
    from machine_health.monitoring.drift import run_drift
    from machine_health.monitoring.performance import run_performance

    now = datetime.now(UTC) + timedelta(seconds=1)
    for moment in (now - timedelta(minutes=30), now):
        run_drift(settings, "vibration", window=timedelta(hours=24), now=moment)
        for domain in ("vibration", "turbofan"):
            run_performance(settings, domain, now=moment)


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
