"""Fixtures of the reliability tests: the session's trained models in a private registry.

The models are the ones tests/integration trains once per session (`session_models`); they are
copied, not retrained, into a registry of our own, so that promotions, rollbacks and corrupt
versions registered here never touch what the other tests serve. For local iteration,
MH_TEST_TRAINED_TRACKING_URI may name a tracking store that already holds version 1 of both
domains (e.g. one `make run` trained): training is then skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from machine_health.config import Settings
from tests.conftest import Server, make_settings, start_uvicorn
from tests.integration.conftest import TrainedModels, airflow_env, create_users, session_models
from tests.reliability.scenarios import ReliabilityRegistry, build_registry

__all__ = ["airflow_env"]  # the DAG fault test's Airflow home (tests/integration/conftest.py)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    existing = os.environ.get("MH_TEST_TRAINED_TRACKING_URI")
    if existing:
        return TrainedModels(existing, vibration_version="1", turbofan_version="1")
    return session_models(tmp_path_factory)


@pytest.fixture(scope="session")
def reliability_registry(
    tmp_path_factory: pytest.TempPathFactory, trained_models: TrainedModels
) -> ReliabilityRegistry:
    return build_registry(tmp_path_factory.mktemp("reliability") / "var", trained_models)


def serve_with_users(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    store_uri: str,
    registry: ReliabilityRegistry,
    **overrides: Any,
) -> Iterator[tuple[Server, Settings]]:
    """A real uvicorn serving this module's registry, with one user per role; stopped after.

    For a module's `api` fixture: `yield from serve_with_users(...)`.
    """
    tmp = tmp_path_factory.mktemp(name)
    settings = make_settings(tmp, store_uri, mlflow_tracking_uri=registry.tracking_uri, **overrides)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs", timeout_s=120)
    try:
        yield server, settings
    finally:
        server.stop()
