"""Test prediction: score an uploaded file or a real sample with POST /predict-test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from machine_health.domains.turbofan.data import SENSORS, SETTINGS
from machine_health.errors import MachineHealthError
from machine_health.ui import charts, common, signals, uploads
from machine_health.ui.client import ApiError

WINDOWS = [2048, 4096, 8192]


@st.cache_data(show_spinner=False)
def vibration_recordings(data_dir: str) -> list[dict[str, Any]]:
    from machine_health.domains.vibration.data import load_manifest, resolve_manifest_dir

    recordings = load_manifest(resolve_manifest_dir(Path(data_dir)))
    return [
        {"file": r.file, "label": r.label, "rate": r.sample_rate, "rpm": r.rpm} for r in recordings
    ]


@st.cache_data(show_spinner=False)
def vibration_sample(data_dir: str, file: str, index: int) -> dict[str, Any]:
    from machine_health.domains.vibration.data import (
        load_manifest,
        make_windows,
        resolve_manifest_dir,
    )

    rec = next(r for r in load_manifest(resolve_manifest_dir(Path(data_dir))) if r.file == file)
    windows = make_windows(
        [rec], portion="test", window=2048, hop=2048, sample_rate=rec.sample_rate
    )
    window = windows.windows[min(index, len(windows.windows) - 1)]
    return {
        "asset_id": f"test-{Path(file).stem}"[:64].replace("@", "-"),
        "samples": [float(v) for v in window],
        "sample_rate": rec.sample_rate,
        "rpm": rec.rpm,
    }


@st.cache_data(show_spinner=False)
def turbofan_test_cycles(data_dir: str) -> pd.DataFrame:
    from machine_health.domains.turbofan.data import find_file, read_history, resolve_cmapss_dir

    return read_history(find_file(resolve_cmapss_dir(Path(data_dir)), "test_FD001"))


def cycle_body(row: pd.Series, unit_id: str) -> dict[str, Any]:
    return {
        "unit_id": unit_id,
        "cycle": int(row["cycle"]),
        "settings": [float(row[c]) for c in SETTINGS],
        "sensors": [float(row[c]) for c in SENSORS],
    }


def vibration_body() -> dict[str, Any] | None:
    data_dir = str(common.settings().data_dir)
    source = st.radio(
        "Input", ["Real CWRU sample", "Upload .mat / .wav / .csv"], key="vib_src", horizontal=True
    )
    if source.startswith("Real"):
        try:
            recordings = vibration_recordings(data_dir)
        except MachineHealthError as exc:
            st.warning(f"No CWRU data beside this UI ({exc}): upload a file instead.")
            return None
        labels = {r["file"]: f"{r['label']} · {r['file']} · {r['rate']:g} Hz" for r in recordings}
        file = st.selectbox("Recording", list(labels), format_func=labels.get, key="vib_file")
        index = st.number_input("Window of its test portion", 0, 50, 0, key="vib_index")
        return vibration_sample(data_dir, file, int(index))
    upload = st.file_uploader("Waveform file", type=["mat", "wav", "csv"], key="vib_upload")
    if upload is None:
        st.info("Upload a CWRU .mat file, a .wav recording or a .csv with one column per signal.")
        return None
    try:
        found = uploads.read_waveforms(upload.name, upload.getvalue())
    except MachineHealthError as exc:
        st.error(str(exc))
        return None
    if not found.signals:
        st.error(f"{upload.name} holds no signal of at least {uploads.MIN_SAMPLES} samples.")
        return None
    for note in found.notes:
        st.caption(note)
    cols = st.columns(4)
    key = cols[0].selectbox("Signal", list(found.signals), key="vib_signal")
    rate = cols[1].number_input(
        "Sample rate (Hz)", 1000.0, 200000.0, found.sample_rate or 12000.0, key="vib_rate"
    )
    rpm = cols[2].number_input(
        "Shaft speed (rpm, 0 = unknown)", 0.0, 30000.0, found.rpm or 0.0, key="vib_rpm"
    )
    length = cols[3].selectbox("Window (samples)", WINDOWS, key="vib_len")
    samples = found.signals[key]
    start = 0
    if len(samples) > length:
        start = st.slider("Start sample", 0, len(samples) - length, 0, key="vib_start")
    window = samples[start : start + length]
    return {
        "asset_id": f"upload-{Path(upload.name).stem}"[:64].replace(" ", "_"),
        "samples": [float(v) for v in window],
        "sample_rate": float(rate),
        "rpm": float(rpm) or None,
    }


def turbofan_body() -> dict[str, Any] | None:
    source = st.radio(
        "Input", ["Real C-MAPSS cycle", "Upload .csv / .txt"], key="tf_src", horizontal=True
    )
    if source.startswith("Real"):
        try:
            frame = turbofan_test_cycles(str(common.settings().data_dir))
        except MachineHealthError as exc:
            st.warning(f"No C-MAPSS data beside this UI ({exc}): upload a file instead.")
            return None
        unit = st.selectbox("Engine of test_FD001", sorted(frame["unit"].unique()), key="tf_unit")
        rows = frame[frame["unit"] == unit]
        cycle = st.select_slider("Cycle", rows["cycle"].tolist(), key="tf_cycle")
        return cycle_body(rows[rows["cycle"] == cycle].iloc[0], f"FD001-{int(unit)}")
    upload = st.file_uploader("Cycles file", type=["csv", "txt"], key="tf_upload")
    if upload is None:
        st.info("Upload a .csv with unit, cycle, setting_1..3, sensor_1..21 (or a C-MAPSS .txt).")
        return None
    try:
        frame = uploads.read_cycles(upload.getvalue())
    except MachineHealthError as exc:
        st.error(str(exc))
        return None
    index = st.number_input("Row", 0, len(frame) - 1, 0, key="tf_row")
    row = frame.iloc[int(index)]
    return cycle_body(row, f"upload-{int(row['unit'])}")


def show_answer(domain: str, body: dict[str, Any], answer: dict[str, Any]) -> None:
    prediction = answer["prediction"]
    cols = st.columns(4)
    if domain == "vibration":
        cols[0].metric("Fault class", prediction["fault_class"])
        cols[1].metric(
            "Anomaly",
            "yes" if prediction["is_anomaly"] else "no",
            help=f"score {prediction['anomaly_score']:.3f}, "
            f"threshold {prediction['threshold']:.3f}",
        )
    else:
        cols[0].metric("Predicted RUL", f"{prediction['rul']:.1f} cycles")
        cols[1].metric(
            "Cycles in window",
            prediction["cycles_in_window"],
            help="Known cycles of the unit in the archive before this one, plus it.",
        )
    cols[2].metric("Model", f"v{answer['model']['version']}")
    cols[3].metric("Archived", answer["archived"])
    if domain == "vibration":
        analysis = signals.analyse(
            np.asarray(body["samples"]), body["sample_rate"], body.get("rpm")
        )
        st.altair_chart(charts.envelope_spectrum(analysis), width="stretch")
    with st.expander("The API's answer"):
        st.json(answer)


def render() -> None:
    st.title("Test prediction")
    st.caption("Scores with the served model through POST /predict-test: nothing is archived.")
    domain = st.selectbox("Domain", ["vibration", "turbofan"], key="test_domain")
    body = vibration_body() if domain == "vibration" else turbofan_body()
    if body is None:
        return
    if st.button("Predict (not archived)", key="test_predict", type="primary"):
        try:
            with st.spinner("Scoring..."):
                answer = common.api().post(f"/predict-test/{domain}", body)
        except ApiError as exc:
            common.show_error(exc)
            return
        show_answer(domain, body, answer)


render()
