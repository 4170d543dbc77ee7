"""What the Streamlit pages draw for an acoustic prediction (`VIEW`; light: numpy, altair).

A prediction shows the clip's log-mel spectrogram as the archive holds it (32 bands, the API
returns it with the prediction: the audio itself is not kept); the test-prediction page takes a
real DCASE valve test clip or an uploaded WAV file and draws its spectrogram beside the answer.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from machine_health.domains.acoustic.domain import (
    ARCHIVE_BANDS,
    item_spectrogram,
    spectrogram_from_archive,
)
from machine_health.domains.acoustic.features import FeatureConfig, mel_filterbank, reduce_bands
from machine_health.domains.view import DomainView, show_anomaly_score, show_score_and_label
from machine_health.errors import MachineHealthError
from machine_health.ui import common

#: Altair draws at most 5000 rows per chart: frames are averaged in groups to stay below it.
MAX_CELLS = 4800
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def band_centres(bands: int = ARCHIVE_BANDS, config: FeatureConfig | None = None) -> np.ndarray:
    """Centre frequency (Hz) of each of the `bands` merged mel bands."""
    config = config or FeatureConfig()
    bank = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
    freqs = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    return freqs[np.argmax(bank, axis=1)].reshape(bands, -1).mean(axis=1)


def spectrogram_frame(spectrum: np.ndarray, config: FeatureConfig | None = None) -> pd.DataFrame:
    """Long table (time_s, band, hz, db) of a `(frames, 32)` log-mel, frames pooled to fit."""
    config = config or FeatureConfig()
    frames, bands = spectrum.shape
    pool = max(1, math.ceil(frames * bands / MAX_CELLS))
    kept = frames // pool * pool or frames
    pooled = spectrum[:kept].reshape(-1, min(pool, kept), bands).mean(axis=1)
    seconds = np.arange(len(pooled)) * pool * config.hop / config.sample_rate
    centres = band_centres(bands, config)
    time_grid, band_grid = np.meshgrid(seconds, np.arange(bands), indexing="ij")
    return pd.DataFrame(
        {
            "time_s": time_grid.ravel().round(3),
            "band": band_grid.ravel(),
            "hz": centres[band_grid.ravel()].round(0),
            "db": pooled.ravel().round(2),
        }
    )


def spectrogram_chart(spectrum: np.ndarray, title: str) -> alt.Chart:
    """A heat map of a `(frames, 32)` log-mel spectrogram (time across, frequency up)."""
    frame = spectrogram_frame(spectrum)
    step = float(frame["time_s"].drop_duplicates().diff().dropna().median() or 0.032)
    frame["time_end"] = frame["time_s"] + step
    return (
        alt.Chart(frame, title=title)
        .mark_rect()
        .encode(
            x=alt.X("time_s:Q", title="time (s)"),
            x2="time_end:Q",
            y=alt.Y("band:O", title="mel band (low → high)", sort="descending"),
            color=alt.Color("db:Q", title="dB", scale=alt.Scale(scheme="magma")),
            tooltip=["time_s", "hz", "db"],
        )
        .properties(height=260)
    )


@st.cache_data(show_spinner=False)
def example_clips(data_dir: str) -> list[dict[str, str]]:
    """The test clips of the data set beside the UI (file, label, domain)."""
    from machine_health.domains.acoustic.data import read_manifest, resolve_dataset_dir

    directory = resolve_dataset_dir(Path(data_dir))
    return [
        {"file": c.file, "label": c.label, "domain": c.domain, "dir": str(directory)}
        for c in read_manifest(directory)
        if c.part == "test"
    ]


def _body(name: str, data: bytes) -> dict[str, Any]:
    asset = _UNSAFE.sub("_", f"test-{Path(name).stem}")[:64]
    return {"asset_id": asset, "audio": base64.b64encode(data).decode("ascii")}


def test_body() -> dict[str, Any] | None:
    source = st.radio(
        "Input", ["Real DCASE valve clip", "Upload .wav"], key="ac_src", horizontal=True
    )
    if source.startswith("Real"):
        try:
            clips = example_clips(str(common.settings().data_dir))
        except MachineHealthError as exc:
            st.warning(f"No DCASE data beside this UI ({exc}): upload a WAV file instead.")
            return None
        labels = {c["file"]: f"{c['label']} · {c['domain']} · {c['file']}" for c in clips}
        file = st.selectbox("Test clip", list(labels), format_func=labels.get, key="ac_file")
        return _body(file, (Path(clips[0]["dir"]) / file).read_bytes())
    upload = st.file_uploader("Sound clip", type=["wav"], key="ac_upload")
    if upload is None:
        st.info("Upload a mono 16-bit PCM WAV file of 5-12 s recorded at 16-48 kHz.")
        return None
    return _body(upload.name, upload.getvalue())


def show_clip(item: dict[str, Any]) -> None:
    doc = item
    if "log_mel_f16_base64" not in (item.get("input") or {}):
        doc = common.archived_prediction(
            item["prediction_id"], "Reading the archived spectrogram..."
        )
        if doc is None:
            return
    out = doc["output"]
    try:
        spectrum = spectrogram_from_archive(doc["input"])
    except (KeyError, ValueError) as exc:
        st.warning(f"This prediction's archived spectrogram cannot be read ({exc}).")
        return
    cols = st.columns(4)
    cols[0].metric("Anomaly", "yes" if out.get("is_anomaly") else "no")
    show_score_and_label(cols[1:3], out, doc.get("label"))
    cols[3].metric("Clip", f"{out.get('seconds', 0):g} s")
    st.caption(f"audio sha256 {doc['input'].get('sha256', '?')[:16]}…; the audio is not archived")
    st.altair_chart(spectrogram_chart(spectrum, "Archived log-mel spectrogram"), width="stretch")


class AcousticView(DomainView):
    performance_metric: ClassVar[str] = "recall"
    projection_colours: ClassVar[dict[str, bool]] = {
        "is_anomaly": True, "label": True, "model_version": True,
    }  # fmt: skip
    labels_hint: ClassVar[str] = "feedback on its predictions (normal / anomaly)"

    def summary(self, output: dict[str, Any]) -> str:
        verdict = "anomaly" if output.get("is_anomaly") else "normal"
        score = output.get("anomaly_score", float("nan"))
        return f"{verdict} (score {score:.2f}, threshold {output.get('threshold', 0):.2f})"

    def show_prediction(self, item: dict[str, Any]) -> None:
        show_clip(item)

    def test_body(self) -> dict[str, Any] | None:
        return test_body()

    def show_answer(
        self, body: dict[str, Any], answer: dict[str, Any], columns: Sequence[Any]
    ) -> None:
        prediction = answer["prediction"]
        columns[0].metric("Anomaly", "yes" if prediction["is_anomaly"] else "no")
        show_anomaly_score(columns[1], prediction)
        try:
            spectrum = item_spectrogram(body)
        except MachineHealthError as exc:
            st.warning(f"Cannot draw this clip ({exc}).")
            return
        compact = reduce_bands(spectrum[None], ARCHIVE_BANDS)[0]
        st.altair_chart(spectrogram_chart(compact, "Log-mel spectrogram"), width="stretch")


VIEW = AcousticView()
