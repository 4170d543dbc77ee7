"""A turbofan bundle through a real (temporary sqlite) MLflow registry and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.turbofan.data import load_subset
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.training import train_bundle

pytestmark = pytest.mark.slow


def test_registry_round_trip_same_predictions(data_dir: Path, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path, data_dir=data_dir)
    fd001 = load_subset(data_dir, "FD001")
    bundle = train_bundle(
        settings, fd001.train, model_name="cnn", seed=0, config=FitConfig(epochs=2, patience=1)
    ).bundle
    with registry.start_run(settings, run_name="turbofan-round-trip"):
        ref = registry.log_bundle(settings, bundle)
    assert ref.version == "1"
    assert registry.ensure_champion(settings, "turbofan", ref.version) is True
    assert registry.ensure_champion(settings, "turbofan", ref.version) is False

    loaded, loaded_ref = registry.load(settings, "turbofan")
    assert loaded_ref.version == "1"
    histories = [fd001.test[fd001.test["unit"] == u] for u in (1, 2, 3)]
    np.testing.assert_allclose(
        [o["rul"] for o in loaded.predict(histories)],
        [o["rul"] for o in bundle.predict(histories)],
        rtol=1e-5,
    )
    assert loaded.describe()["window"] == settings.turbofan_window
