"""Integration fixtures of the API: real models trained ONCE per session, API users, clients.

`trained_models` trains both domains with their own training functions (small, fast settings)
into a session MLflow store; every API test points `MH_MLFLOW_TRACKING_URI` at it, so servers
load real `@champion` models without training again.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pymongo import MongoClient

from machine_health.config import Settings
from tests.conftest import DATA_DIR, make_settings

if TYPE_CHECKING:
    from machine_health.monitoring.reference import Reference


@dataclass(frozen=True)
class TrainedModels:
    tracking_uri: str
    vibration_version: str
    turbofan_version: str
    #: a copy of the registry database as training left it (`pristine_models`), if one was kept
    as_trained: Path | None = None


def train_small_models(var_dir: Path) -> TrainedModels:
    """Register version 1 (@champion) of both domains, trained with fast settings."""
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.training import train_and_register as train_turbofan
    from machine_health.domains.vibration.workflow import train_and_register as train_vibration

    settings = Settings(
        _env_file=None, env="test", var_dir=var_dir, data_dir=DATA_DIR,
        jwt_secret=secrets.token_urlsafe(48), service_token=secrets.token_urlsafe(48),
    )  # fmt: skip
    vibration = train_vibration(settings)
    # No refit on all units: serving tests need a real Keras model, not the best one (-10 s).
    quick = FitConfig(epochs=3, patience=2, refit_all=False)
    turbofan = train_turbofan(settings, model_name="cnn", config=quick)
    as_trained = var_dir / "registry-as-trained.db"
    shutil.copyfile(settings.tracking_uri.removeprefix("sqlite:///"), as_trained)
    return TrainedModels(
        tracking_uri=settings.tracking_uri,
        vibration_version=str(vibration["version"]),
        turbofan_version=str(turbofan["version"]),
        as_trained=as_trained,
    )


_SESSION_MODELS: list[TrainedModels] = []


def session_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """The session's models, trained on first use (shared with tests/reliability and tests/ui).

    API tests register more versions into this registry; tests that list its versions take
    `pristine_models` instead.
    """
    if not _SESSION_MODELS:
        _SESSION_MODELS.append(train_small_models(tmp_path_factory.mktemp("models") / "var"))
    return _SESSION_MODELS[0]


def pristine_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """The session's models in a registry of their own: a copy of the registry database as
    training left it (version 1 of each domain, nothing registered since). The artifacts are
    the session's, read in place; versions added here stay here."""
    models = session_models(tmp_path_factory)
    assert models.as_trained is not None, "the session's models were not trained here"
    copy = tmp_path_factory.mktemp("registry") / "mlflow.db"
    shutil.copyfile(models.as_trained, copy)
    return replace(models, tracking_uri=f"sqlite:///{copy}")


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    return session_models(tmp_path_factory)


def api_settings(
    tmp_path: Path, store_uri: str, models: TrainedModels, **overrides: object
) -> Settings:
    """Test settings whose registry is the session's trained models."""
    return make_settings(tmp_path, store_uri, mlflow_tracking_uri=models.tracking_uri, **overrides)


def register_version(
    settings: Settings,
    bundle: Any,
    run_name: str,
    domain: str,
    *,
    aliases: tuple[str, ...] = (),
    reference: Reference | None = None,
) -> str:
    """Register `bundle` as a new version of the domain's model (with `aliases`, and the drift
    `reference` logged beside it as training does); its number."""
    from machine_health import registry
    from machine_health.monitoring.reference import log_reference

    with registry.start_run(settings, run_name=run_name, tags={"domain": domain}):
        if reference is not None:
            log_reference(reference)
        return registry.log_bundle(settings, bundle, aliases=aliases).version


def turbofan_rows(data_dir: Any, units: int, cycles: int) -> dict[int, list[dict[str, Any]]]:
    """The first `cycles` cycles of the first `units` units of test_FD001, as request rows."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(data_dir, "FD001").test
    out: dict[int, list[dict[str, Any]]] = {}
    for unit, rows in list(test.groupby("unit", sort=True))[:units]:
        out[int(unit)] = [
            {
                "cycle": int(r["cycle"]),
                "settings": [float(r[c]) for c in SETTINGS],
                "sensors": [float(r[c]) for c in SENSORS],
            }
            for _, r in rows.sort_values("cycle").head(cycles).iterrows()
        ]
    return out


def create_user(settings: Settings, name: str, role: str, password: str) -> None:
    from machine_health.archive import client as archive_client
    from machine_health.archive import users
    from machine_health.security import hash_password

    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        db = client[settings.mongodb_db]
        archive_client.ensure_indexes_sync(db)
        users.create_user_sync(db, name, hash_password(password), role)
    finally:
        client.close()


PASSWORDS = {role: f"{role}-{secrets.token_hex(8)}" for role in ("admin", "operator", "viewer")}


def create_users(settings: Settings) -> None:
    """One user per role, named after it (passwords in PASSWORDS)."""
    for role, password in PASSWORDS.items():
        create_user(settings, role, role, password)


def login(url: str, role: str) -> dict[str, str]:
    """Authorization headers of the user named `role`."""
    response = httpx.post(
        f"{url}/token", data={"username": role, "password": PASSWORDS[role]}, timeout=30
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """A migrated Airflow home of the test's own (tests/integration/dag_runs.py)."""
    from tests.integration.dag_runs import airflow_home

    try:
        return airflow_home(tmp_path)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def archive_db(settings: Settings) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield client
    client.close()
