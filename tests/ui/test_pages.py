"""Every page of the UI, run with Streamlit's AppTest against the real seeded API: the numbers
the pages show are the archive's."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy.io import wavfile

from machine_health.domains import DOMAINS
from tests.support.ui import SeededApi, app_as, metrics
from tests.support.users import PASSWORDS

pytestmark = pytest.mark.slow


def _count(api: SeededApi, **query: object) -> int:
    rows = list(api.db.predictions.aggregate([{"$match": query}, {"$count": "n"}]))
    return rows[0]["n"] if rows else 0


def test_sign_in_with_the_api_token_flow(seeded: SeededApi) -> None:
    at = app_as(seeded, None)
    assert at.button[0].label == "Sign in"
    at.text_input(key="login_username").input("viewer")
    at.text_input(key="login_password").input("wrong-password")
    at.button[0].click().run()
    assert "Sign-in refused" in at.error[0].value
    assert "token" not in at.session_state
    at.text_input(key="login_password").input(PASSWORDS["viewer"])
    at.button[0].click().run()
    assert at.session_state["role"] == "viewer"
    assert any("Signed in as **viewer**" in c.value for c in at.sidebar.caption)
    # a viewer may not predict: the test-prediction page is not in its navigation
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("views/test_prediction.py")


def test_overview_numbers_are_the_archives(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "overview")
    shown = metrics(at)
    domains = list(DOMAINS)  # every registered domain, in the registry's order
    assert shown["Predictions"] == [str(_count(seeded, domain=d)) for d in domains]
    assert shown["Labelled"] == [
        str(_count(seeded, domain=d, label={"$ne": None})) for d in domains
    ]
    anomalies = _count(seeded, domain="vibration", **{"output.is_anomaly": True})
    # the anomaly domains: vibration's rate, and none yet for acoustic (no clip in the archive)
    assert _count(seeded, domain="acoustic") == 0
    assert shown["Anomaly rate"] == [f"{anomalies / _count(seeded, domain='vibration'):.1%}", "-"]
    assert shown["Assets"][1] == "3"
    assert shown["Store"] == ["ok"]
    assert shown["Spool depth"] == ["0"]
    assert len(at.get("vega_lite_chart")) >= 3  # over time, fault classes, RUL histogram
    assert any("Champion:** machine-health-vibration v1" in m.value for m in at.markdown)


def test_predictions_table_and_vibration_detail(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "predictions")
    at.selectbox(key="pred_domain").select("vibration").run()
    newest = list(  # newest first (within one millisecond, by id descending: archive/keys.py)
        seeded.db.predictions.find({"domain": "vibration"}, {"prediction_id": 1, "output": 1})
        .sort("domain_time_key", -1)
        .limit(50)
    )
    table = at.dataframe[0].value
    assert list(table["id"]) == [d["prediction_id"] for d in newest]
    chosen = at.selectbox(key="pred_chosen").value
    doc = next(d for d in newest if d["prediction_id"] == chosen)
    assert metrics(at)["Fault class"] == [doc["output"]["fault_class"]]
    # waveform, spectrum, envelope spectrum (+ class probabilities)
    assert len(at.get("vega_lite_chart")) >= 3
    assert any("BPFO" in c.value and "BPFI" in c.value for c in at.caption)
    # why: the explanation the API archived in the background, its summary and ranked evidence
    explained = seeded.db.predictions.find_one({"prediction_id": chosen})["explanation"]
    assert explained is not None, "the background explainer left the seeded window unexplained"
    assert any(explained["summary"] in m.value for m in at.markdown)
    evidence = at.dataframe[-1].value
    assert list(evidence["name"]) == [e["name"] for e in explained["evidence"]]


def test_predictions_turbofan_unit_against_its_true_rul(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "predictions")
    at.selectbox(key="pred_domain").select("turbofan").run()
    at.text_input(key="pred_asset").input(seeded.failed_unit).run()
    cycles = list(seeded.db.predictions.find({"asset_id": seeded.failed_unit}))
    predicted = np.array([d["output"]["rul"] for d in cycles])
    true = np.array([d["label"] for d in cycles])
    shown = metrics(at)
    assert shown["Cycles archived"] == [str(len(cycles))]
    assert shown["RMSE over labelled cycles"] == [
        f"{np.sqrt(np.mean((predicted - true) ** 2)):.2f}"
    ]
    assert len(at.get("vega_lite_chart")) >= 2  # RUL over cycles, sensor trajectories
    at.text_input(key="pred_asset").input(seeded.open_unit).run()
    assert metrics(at)["True RUL"] == ["unknown"]


def test_predictions_empty_state_says_what_to_do(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "predictions")
    at.text_input(key="pred_asset").input("no-such-asset").run()
    assert "No archived prediction matches" in at.info[0].value


def test_projection_covers_every_archived_window(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "projection")
    total = _count(seeded, domain="vibration")
    assert any(c.value.startswith(f"{total} predictions") for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 1
    at.selectbox(key="proj_domain").select("turbofan").run()
    total = _count(seeded, domain="turbofan")
    assert any(c.value.startswith(f"{total} predictions") for c in at.caption)


def test_models_page_admin_actions_only_for_admins(seeded: SeededApi) -> None:
    viewer = app_as(seeded, "viewer", "models")
    assert metrics(viewer)["Champion"] == ["v1"] * len(DOMAINS)  # every domain's first version
    assert not [b for b in viewer.button if "Promote" in b.label or "Reload" in b.label]
    assert any("for admins" in c.value for c in viewer.caption)
    # trained outside the pipeline: the page says why there is no gate report
    assert any("has no gate report" in i.value for i in viewer.info)

    admin = app_as(seeded, "admin", "models")
    assert admin.dataframe[0].value["version"].tolist() == ["1"]
    admin.button(key="reload_vibration").click().run()
    assert any("serves vibration v1" in s.value for s in admin.success)
    admin.button(key="rollback_vibration").click().run()
    assert any("no @previous version" in e.value for e in admin.error)


def test_drift_and_performance_reports(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "drift")
    latest = seeded.db.reports.find_one(
        {"kind": "drift", "domain": "vibration"}, sort=[("created_at", -1)]
    )
    shown = metrics(at)
    assert shown["Inputs compared"] == [str(latest["n_rows"])]
    assert shown["Drifted share"] == [f"{latest['drift_share']:.0%}"]
    assert latest["n_rows"] >= _count(seeded, domain="vibration")  # long windows: several rows
    features = at.dataframe[0].value
    assert len(features) == len(latest["features"])
    performance = seeded.db.reports.find_one(
        {"kind": "performance", "domain": "vibration"}, sort=[("created_at", -1)]
    )
    table = at.dataframe[-1].value
    assert table["n_predictions"].tolist() == [v["n_predictions"] for v in performance["versions"]]
    assert table["n_predictions"].sum() == _count(seeded, domain="vibration", label={"$ne": None})
    at.selectbox(key="drift_domain").select("turbofan").run()
    assert "No drift report for turbofan yet" in at.info[0].value


def test_retraining_page_without_and_with_an_unreachable_airflow(
    seeded: SeededApi, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("MH_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("MH_AIRFLOW_URL", raising=False)
    monkeypatch.delenv("MH_AIRFLOW_PASSWORD", raising=False)
    at = app_as(seeded, "admin", "retraining")
    assert "MH_AIRFLOW_URL" in at.info[0].value
    monkeypatch.setenv("MH_AIRFLOW_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("MH_AIRFLOW_PASSWORD", "not-used")
    at.run()
    assert "did not answer" in at.error[0].value


def test_test_prediction_answers_without_archiving(seeded: SeededApi) -> None:
    before = _count(seeded)
    at = app_as(seeded, "operator", "test_prediction")
    at.button(key="test_predict").click().run()
    shown = metrics(at)
    assert shown["Archived"] == ["not_archived"]
    assert shown["Model"] == ["v1"]
    at.selectbox(key="test_domain").select("turbofan").run()
    at.button(key="test_predict").click().run()
    assert float(metrics(at)["Predicted RUL"][0].split()[0]) >= 0
    assert _count(seeded) == before


def test_test_prediction_of_an_uploaded_wav(seeded: SeededApi) -> None:
    from machine_health.domains.vibration.demo import test_windows as vibration_windows

    window = vibration_windows(seeded.settings.data_dir / "cwru", 1)[0]["body"]
    buffer = io.BytesIO()
    wavfile.write(buffer, int(window["sample_rate"]), np.asarray(window["samples"], np.float32))
    at = app_as(seeded, "operator", "test_prediction")
    at.radio(key="vib_src").set_value("Upload .mat / .wav / .csv").run()
    at.file_uploader(key="vib_upload").upload("window.wav", buffer.getvalue()).run()
    at.button(key="test_predict").click().run()
    assert metrics(at)["Archived"] == ["not_archived"]
