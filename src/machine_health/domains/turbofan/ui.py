"""What the Streamlit pages draw for a turbofan prediction (`VIEW`; light: no scikit-learn).

A unit shows its sensor trajectories and the predicted RUL over cycles against the true RUL once
its failure is known; the test-prediction page takes a real C-MAPSS cycle or an uploaded file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import streamlit as st

from machine_health.domains.turbofan.data import SENSORS, SETTINGS
from machine_health.domains.view import DomainView
from machine_health.errors import MachineHealthError
from machine_health.ui import charts, common, uploads
from machine_health.ui.client import ApiError

DOMAIN = "turbofan"
DEGRADATION_SENSORS = ["sensor_2", "sensor_3", "sensor_4", "sensor_7", "sensor_11", "sensor_12"]
ALL_SENSORS = SENSORS


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


def test_body() -> dict[str, Any] | None:
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


def show_novelty(output: dict[str, Any]) -> None:
    """The answer's novelty flag: its RUL is an extrapolation (absent for older models)."""
    novelty = output.get("novelty") or {}
    if novelty.get("novel"):
        reasons = "; ".join(novelty.get("reasons") or [])
        st.warning(
            f"Outside what the model was trained on (score {novelty['score']:.1f}): {reasons}"
        )


def show_unit(unit_id: str) -> None:
    try:
        with st.spinner(f"Reading every archived cycle of {unit_id}..."):
            cycles = common.api().list_all("/predictions", domain=DOMAIN, asset_id=unit_id)
    except ApiError as exc:
        common.show_error(exc)
        return
    cycles.sort(key=lambda d: d.get("cycle") or 0)
    frame = pd.DataFrame(
        {
            "cycle": [d["cycle"] for d in cycles],
            "predicted RUL": [d["output"].get("rul") for d in cycles],
            "true RUL": [d.get("label") for d in cycles],
        }
    )
    labelled = frame.dropna(subset=["true RUL"])
    cols = st.columns(4)
    cols[0].metric("Cycles archived", len(frame))
    cols[1].metric("Last predicted RUL", f"{frame['predicted RUL'].iloc[-1]:.1f}")
    if labelled.empty:
        cols[2].metric("True RUL", "unknown")
        st.info(
            f"The true RUL appears once the failure of {unit_id} is recorded "
            f"(POST /assets/{unit_id}/failure with its failure cycle)."
        )
    else:
        error = labelled["predicted RUL"] - labelled["true RUL"]
        cols[2].metric("True RUL (last cycle)", f"{labelled['true RUL'].iloc[-1]:.0f}")
        cols[3].metric("RMSE over labelled cycles", f"{float(np.sqrt((error**2).mean())):.2f}")
    show_novelty(cycles[-1]["output"])
    st.altair_chart(charts.rul_over_cycles(frame), width="stretch")
    chosen = st.multiselect("Sensors", ALL_SENSORS, DEGRADATION_SENSORS, key="unit_sensors")
    if chosen:
        sensors = pd.DataFrame(
            [dict(zip(ALL_SENSORS, d["input"]["sensors"], strict=True)) for d in cycles]
        )
        long = (
            sensors[chosen]
            .assign(cycle=frame["cycle"])
            .melt("cycle", var_name="sensor", value_name="value")
        )
        st.altair_chart(charts.trajectories(long))


class TurbofanView(DomainView):
    performance_metric: ClassVar[str] = "rmse"
    projection_colours: ClassVar[dict[str, bool]] = {
        "rul": False, "label": False, "model_version": True, "asset_id": True,
    }  # fmt: skip
    labels_hint: ClassVar[str] = "failures of its units"

    def summary(self, output: dict[str, Any]) -> str:
        novel = (output.get("novelty") or {}).get("novel")
        return f"RUL {output['rul']:.1f}" + (" (novel unit)" if novel else "")

    def show_prediction(self, item: dict[str, Any]) -> None:
        show_unit(item["asset_id"])

    def test_body(self) -> dict[str, Any] | None:
        return test_body()

    def show_answer(
        self, body: dict[str, Any], answer: dict[str, Any], columns: Sequence[Any]
    ) -> None:
        prediction = answer["prediction"]
        columns[0].metric("Predicted RUL", f"{prediction['rul']:.1f} cycles")
        columns[1].metric(
            "Cycles in window",
            prediction["cycles_in_window"],
            help="Known cycles of the unit in the archive before this one, plus it.",
        )
        show_novelty(prediction)


VIEW = TurbofanView()
