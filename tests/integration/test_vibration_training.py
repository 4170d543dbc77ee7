"""Vibration domain end to end on the real CWRU files: quick training, serving path, registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from machine_health import registry
from machine_health.cli import app
from machine_health.config import Settings
from machine_health.domains.base import load_bundle
from machine_health.domains.vibration import (
    DOMAIN,
    VibrationBundle,
    VibrationInput,
    evaluate_bundle,
    load_manifest,
    make_windows,
    train_bundle,
)
from machine_health.domains.vibration.physics import resample
from machine_health.errors import InputError

pytestmark = pytest.mark.slow

#: a coarse hop keeps this training to a few seconds; the benchmark uses 256.
QUICK_HOP = 1024


def local_settings(tmp_path: Path, data_dir: Path) -> Settings:
    """A temporary sqlite MLflow under tmp_path, whatever MH_MLFLOW_TRACKING_URI says."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None, var_dir=tmp_path / "var", data_dir=data_dir, mlflow_tracking_uri=None
    )


@pytest.fixture(scope="module")
def split(data_dir: Path):
    recordings = load_manifest(data_dir / "cwru")
    return tuple(
        make_windows(recordings, portion=p, window=2048, hop=QUICK_HOP, sample_rate=48_000)
        for p in ("train", "test")
    )


@pytest.fixture(scope="module")
def trained(split, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    train, _ = split
    settings = local_settings(tmp_path_factory.mktemp("vib"), data_dir)
    return train_bundle(settings, train, seed=0, extra={"hop": QUICK_HOP})


def test_quick_training_on_the_real_files_separates_faults_from_normal(trained, split) -> None:
    fit = trained
    bundle = fit.bundle
    _, test = split
    metrics = evaluate_bundle(bundle, test)
    assert metrics["anomaly"]["auroc"] >= 0.95
    assert metrics["anomaly"]["recall_at_fpr"] >= 0.9
    assert metrics["classifier"]["macro_f1"] >= 0.9
    assert metrics["classifier"]["labels"] == ["ball", "inner_race", "normal", "outer_race"]
    assert np.asarray(metrics["classifier"]["confusion"]).sum() == len(test)
    # The detector saw normal windows only, and its threshold came from other normal windows.
    assert fit.n_detector_fit + fit.n_calibration <= fit.train_counts["normal"]


def test_predict_takes_dicts_and_input_models_and_resamples(trained, split) -> None:
    bundle = trained.bundle
    _, test = split
    inner = test.windows[test.labels == "inner_race"][3]
    as_dict = {"samples": inner.tolist(), "sample_rate": 48_000.0, "rpm": 1796.0}
    as_model = VibrationInput(asset_id="m-1", **as_dict)
    # The same 2048 samples seen by a 96 kHz sensor: twice the samples, resampled back.
    at_96k = {"samples": resample(inner, 48_000, 96_000).tolist(), "sample_rate": 96_000.0}
    out = bundle.predict([as_dict, as_model, at_96k])
    assert out[0] == out[1]
    assert {o["fault_class"] for o in out} == {"inner_race"}
    assert out[2]["anomaly_score"] == pytest.approx(out[0]["anomaly_score"], rel=0.25)
    assert all(DOMAIN.output_model(**o) for o in out)
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0)
    with pytest.raises(InputError, match="too short"):
        bundle.predict([{"samples": [0.1] * 300, "sample_rate": 200_000.0}])


def test_registry_round_trip_gives_the_same_predictions(
    trained, tmp_path: Path, data_dir: Path
) -> None:
    bundle = trained.bundle
    settings = local_settings(tmp_path, data_dir)
    inputs = [*bundle.smoke_inputs(), DOMAIN.example_input(data_dir)]
    with registry.start_run(settings, run_name="test-vibration"):
        ref = registry.log_bundle(settings, bundle)
    assert ref.version == "1"
    assert registry.ensure_champion(settings, "vibration", ref.version)
    loaded, loaded_ref = registry.load(settings, "vibration")
    assert isinstance(loaded, VibrationBundle)
    assert loaded_ref.version == "1"
    assert loaded.predict(inputs) == bundle.predict(inputs)
    by_uri, _ = registry.load_uri(settings, f"models:/{ref.name}@champion", "vibration")
    assert by_uri.predict(inputs) == bundle.predict(inputs)


def test_evaluate_command_scores_a_local_bundle(
    trained, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = trained.bundle
    folder = bundle.save(tmp_path / "bundle")
    assert isinstance(load_bundle(folder), VibrationBundle)
    monkeypatch.setenv("MH_VAR_DIR", str(tmp_path / "var"))
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", "vibration", "--model-uri", str(folder), "--data-dir", str(data_dir / "cwru"),
         "--portion", "test", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) == {"classifier", "anomaly", "train_seconds", "predict_ms_per_window",
                           "windows", "excluded_fitted_windows"}  # fmt: skip
    # trained on the recordings only: no archived window fitted, no test window left out
    scored = sum(map(sum, report["classifier"]["confusion"]))
    assert report["excluded_fitted_windows"] == 0 and report["windows"] == scored > 0
    assert set(report["anomaly"]) == {"auroc", "recall_at_fpr", "target_fpr", "observed_fpr"}
    assert report["anomaly"]["auroc"] >= 0.95
