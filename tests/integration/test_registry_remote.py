"""The production registry path for real: a local `mlflow server` over HTTP with basic auth.

A DagsHub-hosted MLflow is a tracking server behind HTTP basic auth, reached with the standard
MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD variables. Here the
same client code talks to MLflow's own server (`--app-name basic-auth`, artifacts proxied by
the server): register, aliases, promote/rollback and loading a real bundle all go over HTTP, and
the artifacts end up on the server's side only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.turbofan.data import load_subset
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.training import train_bundle
from machine_health.errors import ConfigurationError
from tests.support.servers import free_port
from tests.support.settings import make_settings

MLFLOW = Path(sys.executable).with_name("mlflow")


@dataclass(frozen=True)
class RemoteMlflow:
    url: str
    username: str
    password: str
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteMlflow]:
    root = tmp_path_factory.mktemp("mlflow-server")
    username, password = "pipeline", secrets.token_urlsafe(24)
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {username}\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    argv = [str(MLFLOW), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield RemoteMlflow(url, username, password, root / "artifacts")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:  # the server answered its last request: no state to keep
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def remote_settings(
    tmp_path: Path, store_uri: str, mlflow_server: RemoteMlflow, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.password)
    return make_settings(
        tmp_path, store_uri, mlflow_tracking_uri=mlflow_server.url,
        mlflow_experiment=f"remote-{secrets.token_hex(4)}", turbofan_window=20,
    )  # fmt: skip


def test_the_server_refuses_anonymous_clients(mlflow_server: RemoteMlflow) -> None:
    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    auth = (mlflow_server.username, mlflow_server.password)
    assert httpx.get(search, auth=auth, timeout=10).status_code == 200


def test_register_promote_and_load_over_http(
    remote_settings: Settings, mlflow_server: RemoteMlflow
) -> None:
    fd001 = load_subset(remote_settings.data_dir, "FD001")
    bundles = [
        # two different small models (the window summary only: the registry is under test)
        train_bundle(remote_settings, fd001.train, model_name="hgb", seed=seed,
                     config=FitConfig(hgb_max_iter=15 + 10 * seed, hgb_scales=())).bundle
        for seed in (0, 1)
    ]  # fmt: skip
    versions = []
    for bundle in bundles:
        with registry.start_run(remote_settings, run_name="remote-hgb"):
            registry.log_metrics({"rmse": 20.0})
            versions.append(registry.log_bundle(remote_settings, bundle).version)
    v1, v2 = versions
    assert registry.ensure_champion(remote_settings, "turbofan", v1) is True
    assert registry.promote(remote_settings, "turbofan", v2) == {"old": v1, "new": v2}
    assert registry.aliases(remote_settings, "turbofan") == {
        "champion": v2, "challenger": v2, "previous": v1,
    }  # fmt: skip

    loaded, ref = registry.load(remote_settings, "turbofan")  # @champion, over HTTP
    assert (ref.version, ref.alias) == (v2, "champion")
    smoke = bundles[1].smoke_inputs()
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(smoke)], [o["rul"] for o in bundles[1].predict(smoke)]
    )
    assert registry.rollback(remote_settings, "turbofan") == {"old": v2, "new": v1}
    assert registry.load(remote_settings, "turbofan")[1].version == v1

    # The artifacts went through the server: they live in its artifacts destination.
    stored = {p.name for p in mlflow_server.artifacts.rglob("*") if p.is_file()}
    assert {"transform.json", "members.json", "smoke.json", "MLmodel"} <= stored
    assert not (remote_settings.var_dir / "mlflow").exists()


def test_wrong_credentials_are_a_clear_configuration_error(
    remote_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="refused the credentials") as caught:
        registry.aliases(remote_settings, "turbofan")
    assert "not-the-password" not in str(caught.value)
    assert time.monotonic() - started < 30  # an auth failure is not retried for minutes
