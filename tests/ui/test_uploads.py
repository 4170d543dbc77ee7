"""The test-prediction page with uploaded files: a real CWRU .mat, a vibration .csv and a C-MAPSS
.csv go through POST /predict-test and the page shows the API's answer (the same as the API gives
for that input directly); unreadable files give a clear error, never a traceback; nothing is
archived."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd
import pytest
from scipy.io import loadmat
from streamlit.testing.v1 import AppTest

from machine_health.domains.turbofan.data import COLUMNS, SENSORS, SETTINGS, load_subset
from tests.support.paths import DATA_DIR
from tests.support.ui import SeededApi, app_as, metrics

pytestmark = pytest.mark.slow
MAT = "48k_Drive_End_IR007_0_109.mat"  # inner-race fault, 48 kHz, drive end key X109_DE_time
WINDOW = 2048  # the page's default window


def _archived(api: SeededApi) -> int:
    return api.db.predictions.count_documents({})


def _direct(api: SeededApi, domain: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{api.url}/predict-test/{domain}", json=body, headers=api.headers["operator"], timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()["prediction"]


def _shown_answer(at: AppTest) -> dict[str, Any]:
    (answer,) = [json.loads(j.value) for j in at.json]
    return answer


def _upload(api: SeededApi, domain: str, name: str, data: bytes) -> AppTest:
    at = app_as(api, "operator", "test_prediction")
    if domain == "vibration":
        at.radio(key="vib_src").set_value("Upload .mat / .wav / .csv").run()
        at.file_uploader(key="vib_upload").upload(name, data).run()
    else:
        at.selectbox(key="test_domain").select("turbofan").run()
        at.radio(key="tf_src").set_value("Upload .csv / .txt").run()
        at.file_uploader(key="tf_upload").upload(name, data).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_uploaded_cwru_mat_is_scored_without_archiving(seeded: SeededApi) -> None:
    before = _archived(seeded)
    path = seeded.settings.data_dir / "cwru" / MAT
    content = loadmat(path)
    at = _upload(seeded, "vibration", MAT, path.read_bytes())
    # the drive-end signal first, the rate from the CWRU name, the speed from the file
    assert at.selectbox(key="vib_signal").value == "X109_DE_time"
    assert at.number_input(key="vib_rate").value == 48_000.0
    assert at.number_input(key="vib_rpm").value == float(content["X109RPM"].ravel()[0])
    at.button(key="test_predict").click().run()
    assert not at.exception
    shown = metrics(at)
    assert shown["Archived"] == ["not_archived"]
    body = {
        "asset_id": "upload-48k_Drive_End_IR007_0_109",
        "samples": [float(v) for v in content["X109_DE_time"].ravel()[:WINDOW]],
        "sample_rate": 48_000.0,
        "rpm": float(content["X109RPM"].ravel()[0]),
    }
    expected = _direct(seeded, "vibration", body)
    assert _shown_answer(at)["prediction"] == expected
    assert shown["Fault class"] == [expected["fault_class"]]
    assert _archived(seeded) == before


def test_uploaded_csv_files_are_scored_without_archiving(seeded: SeededApi) -> None:
    before = _archived(seeded)
    # vibration: one column per signal (a window of the real recording, and its fan-end twin)
    content = loadmat(seeded.settings.data_dir / "cwru" / MAT)
    frame = pd.DataFrame(
        {"drive_end": content["X109_DE_time"].ravel()[:4096],
         "fan_end": content["X109_FE_time"].ravel()[:4096]}
    )  # fmt: skip
    at = _upload(seeded, "vibration", "bearing.csv", frame.to_csv(index=False).encode())
    at.number_input(key="vib_rate").set_value(48_000.0).run()
    at.button(key="test_predict").click().run()
    body = {"asset_id": "upload-bearing", "samples": frame["drive_end"][:WINDOW].tolist(),
            "sample_rate": 48_000.0, "rpm": None}  # fmt: skip
    assert _shown_answer(at)["prediction"] == _direct(seeded, "vibration", body)
    assert metrics(at)["Archived"] == ["not_archived"]

    # turbofan: real C-MAPSS test rows with the documented header; row 3 is scored
    rows = load_subset(seeded.settings.data_dir, "FD001").test.head(5)[COLUMNS]
    at = _upload(seeded, "turbofan", "engine.csv", rows.to_csv(index=False).encode())
    at.number_input(key="tf_row").set_value(3).run()
    at.button(key="test_predict").click().run()
    row = rows.iloc[3]
    body = {"unit_id": f"upload-{int(row['unit'])}", "cycle": int(row["cycle"]),
            "settings": [float(row[c]) for c in SETTINGS],
            "sensors": [float(row[c]) for c in SENSORS]}  # fmt: skip
    expected = _direct(seeded, "turbofan", body)
    assert _shown_answer(at)["prediction"] == expected
    assert metrics(at)["Predicted RUL"] == [f"{expected['rul']:.1f} cycles"]
    assert _archived(seeded) == before


_WORDS = (",".join(COLUMNS) + "\n" + ",".join(["x"] * len(COLUMNS))).encode()
_CUT_MAT = (DATA_DIR / "cwru" / MAT).read_bytes()[:3000]  # a real file, upload interrupted


BAD_FILES = [
    ("vibration", "broken.mat", b"not a MATLAB file" * 20, "cannot read it as a .mat file"),
    ("vibration", "cut.mat", _CUT_MAT, "cannot read it as a .mat file"),
    ("vibration", "words.csv", b"a,b\nx,y\n", "holds no signal of at least 256 samples"),
    ("turbofan", "engine.csv", b"unit,cycle\n1,1\n", "lacks the columns setting_1"),
    ("turbofan", "engine.txt", b"1 2 3\n4 5 6\n", "expected 26 columns per cycle, found 3"),
    ("turbofan", "words.csv", _WORDS, "every column must be a number"),
]


def test_unreadable_uploads_give_a_clear_error(seeded: SeededApi) -> None:
    before = _archived(seeded)
    at = app_as(seeded, "operator", "test_prediction")
    at.radio(key="vib_src").set_value("Upload .mat / .wav / .csv").run()
    for domain, name, data, reason in BAD_FILES:  # one session, file after file
        if domain == "turbofan" and at.selectbox(key="test_domain").value != "turbofan":
            at.selectbox(key="test_domain").select("turbofan").run()
            at.radio(key="tf_src").set_value("Upload .csv / .txt").run()
        uploader = "vib_upload" if domain == "vibration" else "tf_upload"
        at.file_uploader(key=uploader).upload(name, data).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and reason in errors[0], (name, errors)
        assert not [b for b in at.button if b.key == "test_predict"]  # nothing to send
    assert _archived(seeded) == before
