"""The acoustic domain end to end on the real DCASE valve clips, a real store, a real MLflow store
and real API processes (uvicorn):

- version 1 trained and registered by the domain's own `train` (the command `make run` runs);
- POST /predict/acoustic (and /batch, /predict-test) with real clips: the archive keeps the
  32-band log-mel, not the audio; hostile bodies are 422 / 413, never 500; /feedback labels;
- the UI draws an archived acoustic prediction's spectrogram and a test prediction;
- the demo replay (real clips through the API, feedback labels), then `retrain_acoustic` run by
  Airflow's `dag.test()` (the steps as CLI processes, local mode): extract -> ... -> register
  promotes version 2 and the replica reloads it; a second run with nothing new stops at check.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pymongo import MongoClient

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.acoustic import workflow
from machine_health.domains.acoustic.audio import MAX_BASE64_CHARS, wav_base64
from machine_health.domains.acoustic.data import read_wav, resolve_dataset_dir
from machine_health.domains.acoustic.demo import replayed_clips
from machine_health.simulate import simulate
from tests.support.dag_runs import dag_env, run_dag, served, xcom
from tests.support.servers import Server, start_uvicorn
from tests.support.settings import make_settings
from tests.support.ui import SeededApi, app_as, metrics
from tests.support.users import PASSWORDS, create_users, login

DOMAIN = "acoustic"
#: the archived form of a 10 s clip: ~27 kB of base64 log-mel (the audio is ~430 kB)
MAX_ARCHIVED_BYTES = 40_000


def clip_audio(settings: Settings, label: str = "anomaly") -> dict[str, Any]:
    return get_domain(DOMAIN).example_input(settings.data_dir, label=label)  # type: ignore[call-arg]


def wav(samples: np.ndarray, rate: int, *, channels: int = 1, width: int = 2) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
        writer.writeframes(np.repeat(pcm, channels).tobytes() if width == 2 else pcm.tobytes())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, store_uri: str) -> Iterator[SeededApi]:
    """A real API serving version 1 of the acoustic model (trained here: ~5 s)."""
    tmp = tmp_path_factory.mktemp("acoustic-api")
    settings = make_settings(tmp, store_uri)
    trained = workflow.train_and_register(settings)
    assert trained["champion"] and trained["version"] == "1"
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        headers = {role: login(server.url, role) for role in ("admin", "operator", "viewer")}
        yield SeededApi(server.url, settings, client[settings.mongodb_db], headers, "", "")
    finally:
        server.stop()
        client.drop_database(settings.mongodb_db)
        client.close()


def test_a_real_clip_is_scored_and_archived_as_its_log_mel(api: SeededApi) -> None:
    body = clip_audio(api.settings)
    operator = api.headers["operator"]
    answer = httpx.post(f"{api.url}/predict/{DOMAIN}", json=body, headers=operator, timeout=60)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    prediction = result["prediction"]
    assert result["archived"] == "archived" and result["model"]["version"] == "1"
    assert prediction["seconds"] == 10.0 and np.isfinite(prediction["anomaly_score"])
    assert prediction["is_anomaly"] == (prediction["anomaly_score"] > prediction["threshold"])

    doc = api.db.predictions.find_one({"prediction_id": result["prediction_id"]})
    assert "audio" not in doc["input"]
    assert set(doc["input"]) == {
        "asset_id", "sha256", "log_mel_bands", "log_mel_frames", "log_mel_f16_base64",
    }  # fmt: skip
    assert (doc["input"]["log_mel_bands"], doc["input"]["log_mel_frames"]) == (32, 311)
    assert len(json.dumps(doc["input"])) < MAX_ARCHIVED_BYTES < len(body["audio"]) / 10
    # The API returns the archived form (what the UI draws).
    shown = httpx.get(
        f"{api.url}/predictions/{result['prediction_id']}", headers=operator, timeout=30
    ).json()
    assert shown["input"]["log_mel_f16_base64"] == doc["input"]["log_mel_f16_base64"]

    normal = clip_audio(api.settings, label="normal")
    batch = httpx.post(f"{api.url}/predict/{DOMAIN}/batch", json={"items": [body, normal]},
                       headers=operator, timeout=60)  # fmt: skip
    assert batch.status_code == 200, batch.text
    items = batch.json()["items"]
    assert items[0]["prediction"]["anomaly_score"] == prediction["anomaly_score"]
    assert {i["archived"] for i in items} == {"archived"}

    before = api.db.predictions.count_documents({})
    test = httpx.post(f"{api.url}/predict-test/{DOMAIN}", json=body, headers=operator, timeout=60)
    assert test.status_code == 200 and test.json()["archived"] == "not_archived"
    assert api.db.predictions.count_documents({}) == before


def _hostile_bodies(settings: Settings) -> dict[str, Any]:
    real = clip_audio(settings)
    directory = resolve_dataset_dir(settings.data_dir)
    samples, rate = read_wav(directory / replayed_clips(directory)[0].file)
    raw = base64.b64decode(real["audio"])
    truncated = raw[:44] + raw[44 : 44 + 1000]  # the header still claims 10 s of samples
    return {
        "not base64": {"asset_id": "v", "audio": "!" * 200_000},
        "base64 of noise": {
            "asset_id": "v",
            "audio": base64.b64encode(np.random.default_rng(0).bytes(120_000)).decode(),
        },
        "truncated WAV": {"asset_id": "v", "audio": base64.b64encode(truncated).decode()},
        "stereo": {"asset_id": "v", "audio": wav(samples, rate, channels=2)},
        "3 s clip": {"asset_id": "v", "audio": wav_base64(samples[: 3 * rate], rate)},
        "rate below the model's": {"asset_id": "v", "audio": wav_base64(samples[::2], rate // 2)},
        "audio too long a string": {"asset_id": "v", "audio": "A" * (MAX_BASE64_CHARS + 4)},
        "audio a number": {"asset_id": "v", "audio": 12345},
        "no asset": {"audio": real["audio"]},
        "bad asset id": {"asset_id": "../etc/passwd", "audio": real["audio"]},
        "extra field": {**real, "sample_rate": 16000},
        "samples instead of audio": {
            "asset_id": "v",
            "samples": [0.0] * 160_000,
            "sample_rate": 16000,
        },
    }


def test_hostile_bodies_are_refused_not_failed(api: SeededApi) -> None:
    operator = api.headers["operator"]
    for name, body in _hostile_bodies(api.settings).items():
        batch = {"items": [clip_audio(api.settings), body]}
        for path, sent in ((f"/predict/{DOMAIN}", body), (f"/predict/{DOMAIN}/batch", batch)):
            response = httpx.post(api.url + path, json=sent, headers=operator, timeout=60)
            assert response.status_code == 422, (name, path, response.status_code, response.text)
    # Larger than the API reads: 413 before the body is parsed.
    huge = {"items": [clip_audio(api.settings)] * 30}  # ~13 MB > MH_MAX_BODY_BYTES (8 MiB)
    response = httpx.post(f"{api.url}/predict/{DOMAIN}/batch", json=huge, headers=operator,
                          timeout=60)  # fmt: skip
    assert response.status_code == 413, response.text
    assert httpx.get(f"{api.url}/health", timeout=10).status_code == 200


def test_feedback_labels_a_clip_normal_or_anomaly_only(api: SeededApi) -> None:
    operator = api.headers["operator"]
    answer = httpx.post(f"{api.url}/predict/{DOMAIN}", json=clip_audio(api.settings),
                        headers=operator, timeout=60).json()  # fmt: skip
    pid = answer["prediction_id"]
    bad = httpx.post(f"{api.url}/feedback", json={"prediction_id": pid, "label": "ball"},
                     headers=operator, timeout=30)  # fmt: skip
    assert bad.status_code == 422 and "normal" in bad.text
    viewer = httpx.post(f"{api.url}/feedback", json={"prediction_id": pid, "label": "anomaly"},
                        headers=api.headers["viewer"], timeout=30)  # fmt: skip
    assert viewer.status_code == 403
    good = httpx.post(f"{api.url}/feedback", json={"prediction_id": pid, "label": "anomaly"},
                      headers=operator, timeout=30)  # fmt: skip
    assert good.status_code == 200, good.text
    doc = api.db.predictions.find_one({"prediction_id": pid})
    assert (doc["label"], doc["label_source"]) == ("anomaly", "feedback")


def test_the_ui_draws_the_archived_spectrogram_and_a_test_prediction(api: SeededApi) -> None:
    httpx.post(f"{api.url}/predict/{DOMAIN}", json=clip_audio(api.settings),
               headers=api.headers["operator"], timeout=60).raise_for_status()  # fmt: skip
    at = app_as(api, "viewer", "predictions")
    at.selectbox(key="pred_domain").select(DOMAIN).run()
    assert not at.exception, [e.value for e in at.exception]
    chosen = at.selectbox(key="pred_chosen").value
    doc = api.db.predictions.find_one({"prediction_id": chosen})
    shown = metrics(at)
    assert shown["Anomaly score"] == [f"{doc['output']['anomaly_score']:.3f}"]
    assert shown["Anomaly"] == ["yes" if doc["output"]["is_anomaly"] else "no"]
    charts = at.get("vega_lite_chart")
    assert charts, "no spectrogram drawn"
    assert any("magma" in c.proto.spec for c in charts)

    at = app_as(api, "operator", "test_prediction")
    at.selectbox(key="test_domain").select(DOMAIN).run()
    at.button(key="test_predict").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = metrics(at)
    assert shown["Archived"] == ["not_archived"] and shown["Model"] == ["v1"]
    assert any("magma" in c.proto.spec for c in at.get("vega_lite_chart"))


# --- the loop: replayed clips, labels, the retrain DAG, reload --------------------------------
@pytest.mark.slow
def test_replayed_clips_retrain_through_the_dag_and_the_replica_reloads(
    tmp_path: Path, store_uri: str, airflow_env: dict[str, str]
) -> None:
    # The default gate: paired bootstrap intervals on the validation clips (reference) and the
    # held-out most recent replayed clips (field).
    settings = make_settings(tmp_path, store_uri, retrain_min_new_labels=50)
    v1 = str(workflow.train_and_register(settings)["version"])
    create_users(settings)
    replica: Server = start_uvicorn(settings, tmp_path / "logs")
    try:
        settings = settings.model_copy(update={"serving_urls": [replica.url]})
        assert served(replica.url, DOMAIN) == v1
        replay = asyncio.run(
            simulate(replica.url, "operator", PASSWORDS["operator"], settings.data_dir,
                     domains=[DOMAIN])
        )[DOMAIN]  # fmt: skip
        clips = replayed_clips(resolve_dataset_dir(settings.data_dir))
        assert replay["acknowledged"] == replay["labels_sent"] == len(clips) == 60

        env = dag_env(airflow_env, settings)
        first = run_dag(env, datetime.now(UTC), kind="manual", dag_id=f"retrain_{DOMAIN}")
        assert first["state"] == "success", first["log"]
        tasks = first["tasks"]
        assert {t["state"] for t in tasks.values()} == {"success"}, tasks
        assert xcom(tasks["extract"])["rows"] == 60
        validate = xcom(tasks["validate"])
        assert validate["new_rows"] == 60 and validate.get("quarantined", 0) == 0
        rescale = xcom(tasks["rescale"])
        held = rescale["field_rows_held_out"]  # the latest fifth of each valve's clips
        assert 0 < held < 60
        fitted = rescale["archived_normal_fitted"]  # the replayed normal clips, minus the field's
        assert 0 < fitted <= 20
        assert fitted + rescale["archived_anomalies_checked"] == 60 - held  # anomalies: checked
        assert rescale["fit_clips"] == 50 + fitted
        train = xcom(tasks["train"])
        assert train["transform_gap"] == 0.0 and 0 <= train["archive_anomaly_recall"] <= 1
        evaluate = xcom(tasks["evaluate"])
        assert evaluate["passed"] is True, evaluate["rows"]
        register = xcom(tasks["register"])
        v2 = str(register["version"])
        assert register["promoted"] and v2 != v1
        assert registry.aliases(settings, DOMAIN)["champion"] == v2
        assert xcom(tasks["reload"])["reloaded"] is True
        assert served(replica.url, DOMAIN) == v2

        # The gate judged the 60 validation clips (reference) and the held-out field clips,
        # each metric with its interval; the headline test clips are reported beside it only.
        runs = settings.runs_dir / DOMAIN
        gate = json.loads(next(runs.glob("*/gate.json")).read_text())
        rows = {(r["slice"], r["metric"]): r for r in gate["metrics"]}
        assert set(rows) == {
            ("reference", "official_score"), ("reference", "auc_target"), ("field", "auc"),
        }  # fmt: skip
        assert rows["reference", "auc_target"]["n_groups"] == 60
        assert rows["field", "auc"]["n_groups"] == gate["field"]["clips"] == held
        for row in rows.values():
            if row["interval"] is None:  # a field slice of one class has no AUC: not judged
                assert row["slice"] == "field" and "not enough field data" in row["verdict"]
                continue
            low, high = row["interval"]
            assert low <= row["difference"] <= high, row
        assert gate["headline"]["facts"]["eval_clips_excluded"] == 60
        assert gate["headline"]["facts"]["eval_clips"] == 30

        # Nothing new since: the next run stops at its check.
        second = run_dag(env, datetime.now(UTC), kind="manual", dag_id=f"retrain_{DOMAIN}")
        assert second["state"] == "success", second["log"]
        assert xcom(second["tasks"]["check"])["retrain"] is False
        assert served(replica.url, DOMAIN) == v2
    finally:
        replica.stop()
