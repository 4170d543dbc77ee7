"""HTTP clients of the UI: the machine-health API (bearer token) and Airflow's REST API.

The UI never opens the store or the registry: everything it shows comes through these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from machine_health.airflow_client import AirflowClient
from machine_health.config import Settings
from machine_health.errors import MachineHealthError

logger = logging.getLogger(__name__)

TIMEOUT_S = 60.0


class ApiError(MachineHealthError):
    """The API answered with an error (its `reason` is the message) or could not be reached."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ApiClient:
    """One user's view of the API: its base URL and bearer token."""

    base_url: str
    token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of a 2xx answer; ApiError with the API's reason otherwise."""
        url = self.base_url.rstrip("/") + path
        try:
            response = httpx.request(
                method, url, headers=self._headers(), timeout=TIMEOUT_S, **kwargs
            )
        except httpx.HTTPError as exc:
            raise ApiError(0, f"the API at {self.base_url} cannot be reached ({exc})") from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _reason(response))
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def login(self, username: str, password: str) -> dict[str, Any]:
        """POST /token (OAuth2 password form): token, role and expiry."""
        return self.request("POST", "/token", data={"username": username, "password": password})

    def list_all(self, path: str, *, limit: int = 500, most: int = 5_000, **params: Any) -> list:
        """Every item of a paginated listing (GET /predictions), up to `most`."""
        items: list[dict[str, Any]] = []
        page = self.get(path, limit=limit, **params)
        items += page["items"]
        while page.get("next_cursor") and len(items) < most:
            page = self.get(path, cursor=page["next_cursor"], limit=limit, **params)
            items += page["items"]
        return items[:most]


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(body, dict):
        return str(body.get("reason") or body.get("detail") or body)
    return str(body)


def airflow_client(settings: Settings) -> AirflowClient | None:
    """The Airflow client of the retraining page; None when Airflow is not configured.

    MH_AIRFLOW_URL / _USERNAME / _PASSWORD when set; otherwise the local stack's Airflow
    (`make run` keeps its generated admin password in var/airflow/passwords.json).
    """
    password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
    url = settings.airflow_url
    local = settings.var_dir / "airflow" / "passwords.json"
    if password is None and local.is_file():
        password = _local_password(local, settings.airflow_username)
        url = url or f"http://127.0.0.1:{settings.airflow_port}"
    if not url or not password:
        return None
    return AirflowClient(url.rstrip("/"), settings.airflow_username, password, timeout_s=10.0)


def _local_password(path: Path, username: str) -> str | None:
    try:
        return json.loads(path.read_text()).get(username)
    except (OSError, ValueError):
        return None
