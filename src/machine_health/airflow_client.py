"""Airflow over its REST API (v2, Airflow 3): list, trigger and watch DAG runs.

HTTP only, no `airflow` import: the serving environment never installs Airflow. Used by the
local stack (`make run`) and by the UI's retraining page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from machine_health.errors import PipelineError

logger = logging.getLogger(__name__)

FINISHED = {"success", "failed"}


@dataclass
class AirflowClient:
    """A logged-in client of one Airflow api-server (simple auth manager or any JWT issuer)."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 15.0
    _token: str | None = field(default=None, repr=False)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=self.timeout_s,
            )
            if response.status_code >= 400:
                raise PipelineError(f"Airflow login refused ({response.status_code})")
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        response = httpx.request(
            method, f"{self.base_url}/api/v2{path}", headers=self._headers(),
            timeout=self.timeout_s, **kwargs,
        )  # fmt: skip
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise PipelineError(
                f"Airflow {method} {path}: {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def dags(self) -> list[dict[str, Any]]:
        return self._request("GET", "/dags")["dags"]

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120.0) -> None:
        """Wait until the dag-processor has parsed `dag_id` (and unpause it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(d["dag_id"] == dag_id for d in self.dags()):
                self._request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return
            time.sleep(2)
        raise PipelineError(f"DAG {dag_id} did not appear in Airflow within {timeout_s:.0f}s")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return self._request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str, limit: int = 20) -> list[dict[str, Any]]:
        params = {"limit": limit, "order_by": "-start_date"}
        return self._request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[
            "task_instances"
        ]

    def result(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """What a step returned (its `return_value` XCom, as stored); None when it has none."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        entry = self._request("GET", path, missing_ok=True)
        return None if entry is None else entry.get("value")

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            time.sleep(3)
        raise PipelineError(f"{dag_id} run {run_id} not finished within {timeout_s:.0f}s")
