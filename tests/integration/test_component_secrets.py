"""Each component starts with exactly the environment the chart gives its container.

The UI pod gets the shared ConfigMap (MH_ENV=prod, MH_API_URL, MH_UI_PORT...) and no secret:
`machine-health ui` must start and listen where its probes and Service point (all interfaces,
MH_UI_HOST=0.0.0.0 — probed on 127.0.0.2, which a listener bound to 127.0.0.1 only does not
answer). The API, which signs and verifies tokens, must still refuse to start without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from machine_health.api.app import create_app
from machine_health.config import Settings
from machine_health.errors import ConfigurationError
from tests.support.paths import DATA_DIR
from tests.support.servers import free_port

CLI = [sys.executable, "-m", "machine_health"]


def chart_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The rendered ConfigMap (templates/configmap.yaml) plus what the image sets (PATH, HOME)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "MH_ENV": "prod",
        "MH_LOG_JSON": "1",
        "MH_LOG_LEVEL": "INFO",
        "MH_VAR_DIR": str(tmp_path / "var"),
        "MH_DATA_DIR": str(DATA_DIR),
        "MH_MONGODB_DB": "machine_health",
        "MH_STORE_TIMEOUT_MS": "2000",
        "MH_MLFLOW_TRACKING_URI": "http://machine-health-mlflow:5000",
        "MH_MLFLOW_EXPERIMENT": "machine-health",
        "MH_MODEL_NAME_PREFIX": "machine-health",
        "MH_API_PORT": "8000",
        "MH_UI_PORT": "8501",
        "MH_SELF_REGISTRATION": "0",
        "MH_API_URL": "http://machine-health-api:8000",
        "MH_SERVING_SERVICE": "machine-health-api",
        "MH_SERVING_LABEL_SELECTOR": "app.kubernetes.io/component=api",
        "MH_REPLICA_NAME": "machine-health-ui-0",
        **extra,
    }


def test_ui_starts_in_prod_without_secrets_on_all_interfaces(tmp_path: Path) -> None:
    port = free_port()
    env = chart_env(tmp_path, MH_UI_HOST="0.0.0.0", MH_UI_PORT=str(port))
    (tmp_path / "home").mkdir()
    log_path = tmp_path / "ui.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*CLI, "ui"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        status = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.2:{port}/_stcore/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        log_text = log_path.read_text(errors="replace")
        assert proc.poll() is None, f"ui exited ({proc.returncode}):\n{log_text[-2000:]}"
        assert status is not None and status.status_code == 200, log_text[-2000:]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_serve_refuses_to_start_in_prod_without_secrets(tmp_path: Path) -> None:
    env = chart_env(tmp_path, MH_API_PORT=str(free_port()))
    for missing in ("MH_JWT_SECRET", "MH_SERVICE_TOKEN"):
        present = {"MH_JWT_SECRET": "j" * 48, "MH_SERVICE_TOKEN": "s" * 48}
        present.pop(missing)
        out = subprocess.run(
            [*CLI, "serve"], env={**env, **present}, cwd=tmp_path, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"{missing} must be set" in out.stderr


def test_api_app_factory_refuses_missing_secrets_outside_dev(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="prod", var_dir=tmp_path)  # the UI's settings: fine
    with pytest.raises(ConfigurationError, match="MH_JWT_SECRET must be set"):
        create_app(settings)
    only_jwt = settings.model_copy(update={"jwt_secret": Settings(
        _env_file=None, jwt_secret="k" * 40).jwt_secret})  # fmt: skip
    with pytest.raises(ConfigurationError, match="MH_SERVICE_TOKEN must be set"):
        create_app(only_jwt)
