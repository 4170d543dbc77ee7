"""Drift runs, live performance and retrain triggers against the REAL store and a real MLflow
store, with real models trained on the real data and real archived inputs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pymongo.database import Database

from machine_health import registry
from machine_health.archive import reports
from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.domains.turbofan.models import FitConfig
from machine_health.domains.turbofan.monitoring import drift_reference as turbofan_reference
from machine_health.domains.turbofan.training import evaluate_bundle, train_bundle
from machine_health.domains.vibration import data as vib_data
from machine_health.domains.vibration.monitoring import drift_reference as vibration_reference
from machine_health.domains.vibration.training import train_bundle as train_vibration
from machine_health.errors import ModelNotFound
from machine_health.monitoring import drift, performance, triggers
from machine_health.monitoring.reference import Reference, log_reference
from machine_health.samples import encode_samples
from tests.support.models import TrainedModels, api_settings

T0 = datetime(2025, 3, 1, tzinfo=UTC)
pytestmark = pytest.mark.slow  # trains a turbofan and a vibration model on the real data


@pytest.fixture(scope="module")
def turbofan(data_dir: Path) -> dict[str, Any]:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    fd001 = load_subset(data_dir, "FD001")
    fit = train_bundle(settings, fd001.train, model_name="hgb", config=FitConfig(hgb_max_iter=40))
    return {
        "bundle": fit.bundle,
        "reference": turbofan_reference(fd001.train, subset="FD001"),
        "fd001": fd001,
        "fd002": load_subset(data_dir, "FD002"),
    }


@pytest.fixture(scope="module")
def vibration(data_dir: Path) -> dict[str, Any]:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    recordings = vib_data.load_manifest(vib_data.resolve_manifest_dir(data_dir))

    def windows(portion: str) -> vib_data.WindowSet:
        return vib_data.make_windows(
            recordings, portion=portion, window=2048, hop=2048, sample_rate=48_000.0
        )

    train = windows("train")
    bundle = train_vibration(settings, train, seed=0).bundle
    reference = vibration_reference(train.windows, train.rpm, bundle.config)
    return {"bundle": bundle, "reference": reference, "train": train, "test": windows("test")}


def register(settings: Settings, bundle: Any, reference: Reference | None) -> str:
    with registry.start_run(settings, run_name=f"monitoring-{bundle.domain}"):
        if reference is not None:
            log_reference(reference)
        version = registry.log_bundle(settings, bundle).version
    registry.ensure_champion(settings, bundle.domain, version)
    return version


def archive(db: Database, documents: list[dict[str, Any]]) -> None:
    db["predictions"].insert_many(documents)


def turbofan_documents(
    frame: pd.DataFrame, *, version: str, start: datetime, outputs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    tag = uuid.uuid4().hex[:6]
    docs = []
    for i, row in enumerate(frame.itertuples(index=False)):
        labelled = labels is not None
        docs.append(
            PredictionRecord(
                prediction_id=uuid.uuid4().hex, domain="turbofan",
                asset_id=f"{tag}-u{int(row.unit)}", cycle=int(row.cycle),
                input={
                    "unit_id": f"{tag}-u{int(row.unit)}", "cycle": int(row.cycle),
                    "settings": [float(getattr(row, c)) for c in SETTINGS],
                    "sensors": [float(getattr(row, c)) for c in SENSORS],
                },
                output={"rul": float(outputs[i]) if outputs is not None else 50.0},
                model_name="machine-health-turbofan", model_version=version, user="test",
                request_id=uuid.uuid4().hex, latency_ms=1.0,
                created_at=start + timedelta(seconds=i),
                label=float(labels[i]) if labelled else None,
                labelled_at=start + timedelta(days=1) if labelled else None,
                label_source="failure" if labelled else None,
            ).to_document()
        )  # fmt: skip
    return docs


def vibration_documents(
    windows: vib_data.WindowSet, outputs: list[dict[str, Any]], *, version: str, start: datetime
) -> list[dict[str, Any]]:
    return [
        PredictionRecord(
            prediction_id=uuid.uuid4().hex, domain="vibration", asset_id=str(windows.sources[i]),
            input={"samples": encode_samples(windows.windows[i]),
                   "sample_rate": windows.sample_rate, "rpm": float(windows.rpm[i])},
            output=outputs[i], model_name="machine-health-vibration", model_version=version,
            user="test", request_id=uuid.uuid4().hex, latency_ms=1.0,
            created_at=start + timedelta(seconds=i), label=str(windows.labels[i]),
            labelled_at=start + timedelta(seconds=i + 1), label_source="feedback",
        ).to_document()
        for i in range(len(windows))
    ]  # fmt: skip


def check_step(
    settings: Settings, run_id: str, end: datetime, domain: str = "turbofan", **kwargs: Any
) -> dict[str, Any]:
    """The retrain DAG's first task (`machine-health pipeline check`), new labels set aside."""
    from machine_health.pipeline import check

    return check.run(
        settings=settings, domain=domain, run_id=run_id, interval_start=end - timedelta(days=1),
        interval_end=end, min_new_labels=10**9, **kwargs,
    )  # fmt: skip


def test_the_check_step_measures_drift_itself(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> None:
    """No drift command was run: the DAG's check measures the interval and acts on it."""
    version = serve_fd001_model_on_fd002_cycles(settings, db, turbofan)
    assert reports.latest(db, reports.DRIFT, "turbofan") is None
    checked = check_step(settings, "r1", T0 + timedelta(days=1))
    assert checked["retrain"] is True and checked["reasons"] == ["monitoring: drift"]
    assert checked["monitoring"]["drift"]["flagged"] is True
    assert checked["monitoring"]["drift"]["model_version"] == version
    stored = reports.latest(db, reports.DRIFT, "turbofan")
    assert stored["window_start"] == T0 and stored["window_end"] == T0 + timedelta(days=1)
    assert checked["monitoring"]["drift"]["n_rows"] == stored["n_rows"] > 0
    performance_report = reports.latest(db, reports.PERFORMANCE, "turbofan")
    assert performance_report["window_end"] == T0 + timedelta(days=1)


def first_units(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    return frame[frame["unit"].isin(sorted(frame["unit"].unique())[:n])]


def serve_fd001_model_on_fd002_cycles(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> str:
    """FD002 cycles (six operating regimes) archived as served by the FD001 model (one regime):
    a drift the monitoring must see. Returns the model's version."""
    version = register(settings, turbofan["bundle"], turbofan["reference"])
    archive(db, turbofan_documents(first_units(turbofan["fd002"].test, 25), version=version,
                                   start=T0))  # fmt: skip
    return version


def test_drift_above_threshold_triggers_once_then_cools_down(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> None:
    version = serve_fd001_model_on_fd002_cycles(settings, db, turbofan)
    report = drift.run_drift(
        settings, "turbofan", window=timedelta(hours=24), now=T0 + timedelta(hours=20)
    )
    assert report["flagged"]
    assert report["model_version"] == version
    assert report["n_groups"] == 25
    stored = reports.latest(db, reports.DRIFT, "turbofan")
    assert stored is not None
    assert stored["drift_share"] == report["drift_share"]

    # The next scheduled DAG run: its `check` step (the short-circuit) retrains although far
    # fewer labels than MH_RETRAIN_MIN_NEW_LABELS arrived.
    checked = check_step(settings, "r1", T0 + timedelta(days=1))
    assert checked["retrain"] is True
    assert checked["reasons"] == ["monitoring: drift"]
    decision = triggers.should_retrain(
        settings, "turbofan", now=T0 + timedelta(days=1), run_id="r1"
    )
    assert decision["replayed"]
    assert (decision["retrain"], decision["reason"]) == (True, "drift")
    assert decision["cooldown_until"] == T0 + timedelta(
        days=1, hours=settings.retrain_cooldown_hours
    )
    # a retry of the same run's check decides the same
    assert check_step(settings, "r1", T0 + timedelta(days=1), force=True)["retrain"] is True

    # After the cooldown, the report already acted on does not fire again...
    later = T0 + timedelta(days=3)
    quiet = triggers.should_retrain(settings, "turbofan", now=later, run_id="r2")
    assert (quiet["retrain"], quiet["reason"]) == (False, None)
    # ...a new flagged report does (the drift persists: no better model was promoted)...
    drift.run_drift(settings, "turbofan", window=timedelta(days=4), now=later)
    fired = triggers.should_retrain(settings, "turbofan", now=later + timedelta(hours=1))
    assert fired["retrain"]
    # ...and the next one inside the new cooldown is held.
    drift.run_drift(settings, "turbofan", window=timedelta(days=4), now=later + timedelta(hours=2))
    held = triggers.should_retrain(settings, "turbofan", now=later + timedelta(hours=3))
    assert (held["retrain"], held["reason"]) == (False, "cooldown")
    assert held["cooldown_until"] == fired["cooldown_until"]


def test_drift_below_threshold_short_circuits(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> None:
    version = register(settings, turbofan["bundle"], turbofan["reference"])
    # FD001 test engines: same engines and conditions, earlier in life.
    archive(db, turbofan_documents(first_units(turbofan["fd001"].test, 40), version=version,
                                   start=T0))  # fmt: skip
    report = drift.run_drift(
        settings, "turbofan", window=timedelta(hours=24), now=T0 + timedelta(hours=20)
    )
    assert report["status"] == "ok"
    assert not report["flagged"]
    checked = check_step(settings, "r1", T0 + timedelta(days=1))
    assert checked["retrain"] is False  # the DAG's short-circuit stops the run here
    decision = triggers.should_retrain(
        settings, "turbofan", now=T0 + timedelta(days=1), run_id="r1"
    )
    assert decision["retrain"] is False
    assert decision["reason"] is None
    assert decision["drift"]["flagged"] is False
    assert reports.latest(db, reports.TRIGGER, "turbofan") is None


def test_a_drift_report_about_a_replaced_model_does_not_fire(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> None:
    old = register(settings, turbofan["bundle"], turbofan["reference"])
    archive(db, turbofan_documents(first_units(turbofan["fd002"].test, 20), version=old, start=T0))
    assert drift.run_drift(
        settings, "turbofan", window=timedelta(hours=24), now=T0 + timedelta(hours=20)
    )["flagged"]
    new = register(settings, turbofan["bundle"], turbofan["reference"])
    registry.promote(settings, "turbofan", new)
    decision = triggers.should_retrain(settings, "turbofan", now=T0 + timedelta(days=1))
    assert decision["champion"] == new
    assert decision["drift"] is None
    assert not decision["retrain"]


def test_vibration_drift_run_reads_archived_windows(
    settings: Settings, db: Database, vibration: dict[str, Any]
) -> None:
    version = register(settings, vibration["bundle"], vibration["reference"])
    # The whole test portion (later in every recording, same class mix as training).
    test = vibration["test"]
    outputs = vibration["bundle"].predict(
        [
            {"samples": w, "sample_rate": test.sample_rate, "rpm": r}
            for w, r in zip(test.windows, test.rpm, strict=True)
        ]
    )
    archive(db, vibration_documents(test, outputs, version=version, start=T0))
    quiet = drift.run_drift(
        settings, "vibration", window=timedelta(hours=1), now=T0 + timedelta(minutes=30)
    )
    assert quiet["n_rows"] == len(test)
    assert not quiet["flagged"]
    assert len(quiet["bands"]) == len(vibration["bundle"].config.band_edges)


def test_performance_report_matches_offline_evaluation_and_triggers(
    settings: Settings, db: Database, turbofan: dict[str, Any]
) -> None:
    bundle, fd001 = turbofan["bundle"], turbofan["fd001"]
    version = register(settings, bundle, turbofan["reference"])
    test = fd001.test.sort_values(["unit", "cycle"], kind="stable")
    predicted = bundle.predict_windows(bundle.transform.windows(test, every_cycle=True))
    last_cycle = test.groupby("unit")["cycle"].transform("max").to_numpy()
    true_end = pd.Series(fd001.rul, index=sorted(test["unit"].unique()))
    true_rul = true_end.loc[test["unit"]].to_numpy() + last_cycle - test["cycle"].to_numpy()
    # Every unit's last 15 cycles are archived (the last one is what RMSE / PHM08 score).
    recent = (test.groupby("unit").cumcount(ascending=False) < 15).to_numpy()
    archive(db, turbofan_documents(test[recent], version=version, start=T0,
                                   outputs=predicted[recent], labels=true_rul[recent]))  # fmt: skip

    report = performance.run_performance(settings, "turbofan", now=T0 + timedelta(days=2))
    (mine,) = report["versions"]
    offline = evaluate_bundle(bundle, fd001.test, fd001.rul)
    assert mine["model_version"] == version
    assert mine["n_units"] == 100
    assert mine["rmse"] == pytest.approx(offline["rmse"], rel=1e-6)
    assert mine["phm08"] == pytest.approx(offline["phm_score"], rel=1e-6)
    assert mine["rmse"] < 25
    assert not mine["degraded"]
    assert not triggers.should_retrain(settings, "turbofan", now=T0 + timedelta(days=2))["retrain"]

    # The same labels judged against a stricter bar: degraded, and the trigger fires.
    strict = settings.model_copy(update={"live_rmse_max": mine["rmse"] - 1})
    again = performance.run_performance(strict, "turbofan", now=T0 + timedelta(days=3))
    assert again["degraded_versions"] == [version]
    decision = triggers.should_retrain(strict, "turbofan", now=T0 + timedelta(days=3))
    assert (decision["retrain"], decision["reason"]) == (True, "performance")
    # labels that arrive after `now` are not counted yet
    early = performance.run_performance(settings, "turbofan", now=T0 + timedelta(hours=1))
    assert early["n_labelled"] == 0


def test_vibration_live_precision_recall(
    settings: Settings, db: Database, vibration: dict[str, Any]
) -> None:
    bundle, test = vibration["bundle"], vibration["test"]
    version = register(settings, bundle, None)
    outputs = bundle.predict(
        [
            {"samples": w, "sample_rate": test.sample_rate, "rpm": r}
            for w, r in zip(test.windows, test.rpm, strict=True)
        ]
    )
    archive(db, vibration_documents(test, outputs, version=version, start=T0))
    report = performance.run_performance(settings, "vibration", now=T0 + timedelta(hours=1))
    (mine,) = report["versions"]
    alarms = np.array([o["is_anomaly"] for o in outputs])
    assert mine["n_predictions"] == len(test)
    assert mine["n_faults"] == int(test.is_fault.sum())
    assert mine["recall"] == pytest.approx(alarms[test.is_fault].mean())
    assert mine["recall"] > 0.9  # real CWRU faults are loud
    assert mine["precision"] > 0.9


def test_a_version_without_reference_is_a_clear_error(
    settings: Settings, db: Database, vibration: dict[str, Any]
) -> None:
    version = register(settings, vibration["bundle"], None)
    test = vibration["test"]
    outputs = [{"is_anomaly": False, "fault_class": "normal"}] * len(test)
    archive(db, vibration_documents(test, outputs, version=version, start=T0))
    with pytest.raises(ModelNotFound, match="drift_reference"):
        drift.run_drift(
            settings, "vibration", window=timedelta(hours=1), now=T0 + timedelta(minutes=30)
        )


def test_the_vibration_training_path_registers_its_reference(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> None:
    """The session's models come from the domains' own `train_and_register`."""
    from machine_health.domains.vibration.features import feature_names
    from machine_health.monitoring.reference import load_reference

    settings = api_settings(tmp_path, store_uri, trained_models)
    version = trained_models.vibration_version
    reference = load_reference(settings, "vibration", version)
    bundle, _ = registry.load(settings, "vibration", version=version)
    assert reference.features == feature_names(bundle.config)
    assert reference.meta["feature_config"] == bundle.config.as_dict()
    # non-overlapping training windows: 70 % of each recording, 2048 samples apart
    assert reference.n_rows == reference.n_groups == len(reference.sample) > 400
