"""What the Streamlit pages draw for a vibration prediction (`VIEW`; light: no scikit-learn).

A prediction shows its window's waveform, spectrum and envelope spectrum with the bearing defect
frequencies marked; the test-prediction page takes a real CWRU window or an uploaded file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import streamlit as st

from machine_health.domains.view import DomainView, show_score_and_label
from machine_health.errors import MachineHealthError
from machine_health.samples import decode_samples
from machine_health.ui import charts, common, signals, uploads

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


def test_body() -> dict[str, Any] | None:
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


def show_window(prediction_id: str) -> None:
    doc = common.archived_prediction(prediction_id, "Reading the archived window...")
    if doc is None:
        return
    body, out = doc["input"], doc["output"]
    samples = decode_samples(body["samples"])
    rate, rpm = float(body["sample_rate"]), body.get("rpm")
    analysis = signals.analyse(samples, rate, rpm)
    cols = st.columns(4)
    cols[0].metric("Fault class", out.get("fault_class"))
    show_score_and_label(cols[1:3], out, doc.get("label"))
    cols[3].metric("Window", f"{len(samples)} @ {rate:g} Hz")
    defects = ", ".join(f"{k.upper()} {v:.1f} Hz" for k, v in analysis.defects.items())
    st.caption(f"Shaft speed {rpm or 'nominal'} rpm; defect frequencies: {defects}")
    st.altair_chart(charts.waveform(analysis), width="stretch")
    st.altair_chart(charts.spectrum(analysis), width="stretch")
    st.altair_chart(charts.envelope_spectrum(analysis), width="stretch")
    probabilities = out.get("probabilities") or {}
    if probabilities:
        st.altair_chart(
            charts.counts_bar(probabilities, "class")
            .encode(y="predictions:Q")
            .properties(title="Class probabilities"),
            width="stretch",
        )


class VibrationView(DomainView):
    performance_metric: ClassVar[str] = "recall"
    projection_colours: ClassVar[dict[str, bool]] = {
        "fault_class": True, "label": True, "is_anomaly": True, "model_version": True,
    }  # fmt: skip
    labels_hint: ClassVar[str] = "feedback on its predictions"

    def summary(self, output: dict[str, Any]) -> str:
        flag = ", anomaly" if output.get("is_anomaly") else ""
        score = output.get("anomaly_score", float("nan"))
        return f"{output['fault_class']} (score {score:.2f}{flag})"

    def show_prediction(self, item: dict[str, Any]) -> None:
        show_window(item["prediction_id"])

    def test_body(self) -> dict[str, Any] | None:
        return test_body()

    def show_answer(
        self, body: dict[str, Any], answer: dict[str, Any], columns: Sequence[Any]
    ) -> None:
        prediction = answer["prediction"]
        columns[0].metric("Fault class", prediction["fault_class"])
        columns[1].metric(
            "Anomaly",
            "yes" if prediction["is_anomaly"] else "no",
            help=f"score {prediction['anomaly_score']:.3f}, "
            f"threshold {prediction['threshold']:.3f}",
        )
        samples = np.asarray(body["samples"])
        analysis = signals.analyse(samples, body["sample_rate"], body.get("rpm"))
        st.altair_chart(charts.envelope_spectrum(analysis), width="stretch")


VIEW = VibrationView()
