"""Fixtures of the reliability tests: the session's trained models in a private registry.

The models are the session's (`trained_models`, tests/support/models.py); they are copied, not
retrained, into a registry of our own, so that promotions, rollbacks and corrupt versions
registered here never touch what the other tests serve.
"""

from __future__ import annotations

import pytest

from tests.support.models import TrainedModels
from tests.support.reliability.scenarios import ReliabilityRegistry, build_registry


@pytest.fixture(scope="session")
def reliability_registry(
    tmp_path_factory: pytest.TempPathFactory, trained_models: TrainedModels
) -> ReliabilityRegistry:
    return build_registry(tmp_path_factory.mktemp("reliability") / "var", trained_models)
