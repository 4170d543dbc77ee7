"""The session's renders of the chart (real helm; the helpers are tests/support/helm.py)."""

from __future__ import annotations

import pytest

from tests.support.helm import (
    EVERYTHING,
    MONITORING_API,
    PRODUCTION_VALUES,
    Manifest,
    random_secrets,
    set_args,
    template,
)


@pytest.fixture(scope="session")
def generated_secrets() -> dict[str, str]:
    return random_secrets()


@pytest.fixture(scope="session")
def default_render(generated_secrets: dict[str, str]) -> list[Manifest]:
    """Default values plus the required secrets, generated for this session."""
    return template(*set_args(generated_secrets))


@pytest.fixture(scope="session")
def everything_render() -> list[Manifest]:
    """Every optional template on (monitoring with its CRDs, toolbox, sticky UI replicas, hard
    anti-affinity, published docs, a helm test that logs in)."""
    return template(*MONITORING_API, *EVERYTHING)


@pytest.fixture(scope="session")
def production_render() -> list[Manifest]:
    return template("-f", PRODUCTION_VALUES)


@pytest.fixture(scope="session")
def renders(
    default_render: list[Manifest],
    everything_render: list[Manifest],
    production_render: list[Manifest],
) -> dict[str, list[Manifest]]:
    return {
        "default": default_render,
        "everything": everything_render,
        "production": production_render,
    }
