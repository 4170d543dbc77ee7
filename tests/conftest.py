"""The suite's shared fixtures (the helpers they use are tests/support/): a real document store
over TCP, one test's settings and database, real uvicorn servers, the session's trained models,
a migrated Airflow home per test.

The store is the embedded nx-27017 on a free port with an in-memory database, unless
MH_TEST_MONGODB_URI names another server (e.g. a real MongoDB): the same tests then run there.

Before any test: every tool the suite runs must be installed (tests/support/tools.py); a
missing one stops the session with the make target that installs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from machine_health import embedded_store
from machine_health.config import Settings
from tests.support import airflow_home, models, zygote
from tests.support.paths import DATA_DIR
from tests.support.servers import Server, free_port, start_uvicorn
from tests.support.settings import make_settings, own_database
from tests.support.tools import missing_install_steps


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = missing_install_steps()
    if missing:
        lines = "\n  ".join(missing)
        pytest.exit(f"the test suite needs what is not installed:\n  {lines}", returncode=4)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data sets; their absence is a broken checkout, not a reason to skip."""
    if not (DATA_DIR / "cmapss").is_dir() or not (DATA_DIR / "cwru").is_dir():
        pytest.fail(f"real data not found at {DATA_DIR} (the shared/ folder beside the repo)")
    return DATA_DIR


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real store over TCP for the whole session."""
    zygote.warm()  # the servers' zygote imports the app while the first tests run
    external = os.environ.get("MH_TEST_MONGODB_URI")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("store") / "store.log"
    proc = embedded_store.launch("127.0.0.1", free_port(), embedded_store.MEMORY, log)
    port = proc.args[proc.args.index("--port") + 1]  # type: ignore[union-attr]
    yield f"mongodb://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def settings(tmp_path: Path, store_uri: str) -> Settings:
    return make_settings(tmp_path, store_uri)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The test's own database on the real store, dropped afterwards."""
    yield from own_database(settings)


@pytest.fixture
def archive_db(settings: Settings) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def uvicorn_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory of real uvicorn servers; every one started is stopped after the test."""
    started: list[Server] = []

    def start(settings: Settings, **kwargs: object) -> Server:
        server = start_uvicorn(settings, tmp_path / "logs", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> models.TrainedModels:
    """The session's models (tests/support/models.py), trained once on first use: version 1
    @champion of both domains in a registry the API tests share (and may register more into)."""
    existing = models.existing_models()
    if existing is not None:
        return existing
    return models.train_small_models(tmp_path_factory.mktemp("models") / "var")


@pytest.fixture(scope="session")
def pristine_models(
    tmp_path_factory: pytest.TempPathFactory, trained_models: models.TrainedModels
) -> models.TrainedModels:
    """The session's models in a registry as training left them (version 1 of each domain and
    nothing else), for tests that list the versions: nobody registers into it."""
    return models.pristine_copy(trained_models, tmp_path_factory.mktemp("pristine-registry"))


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata database migrated by `airflow db migrate`, once per session."""
    try:
        return airflow_home.migrate(tmp_path_factory.mktemp("airflow-template") / "airflow")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def airflow_env(tmp_path: Path, migrated_airflow_db: Path) -> dict[str, str]:
    """An Airflow home of the test's own (a copy of the session's migrated metadata DB) and the
    environment that uses it (tests/support/airflow_home.py)."""
    return airflow_home.airflow_home(tmp_path, migrated_airflow_db)
