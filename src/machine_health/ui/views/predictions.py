"""Predictions: the archive filtered by domain, asset, time and model version; one in detail.

A vibration prediction shows its window's waveform, spectrum and envelope spectrum with the
bearing defect frequencies marked; a turbofan unit shows its sensor trajectories and the
predicted RUL over cycles against the true RUL once its failure is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from machine_health.samples import decode_samples
from machine_health.ui import charts, common, signals
from machine_health.ui.client import ApiError

PAGE_SIZE = 50
DEGRADATION_SENSORS = ["sensor_2", "sensor_3", "sensor_4", "sensor_7", "sensor_11", "sensor_12"]
ALL_SENSORS = [f"sensor_{i}" for i in range(1, 22)]


def summary(item: dict[str, Any]) -> str:
    """One line saying what the model answered."""
    out = item.get("output") or {}
    if "fault_class" in out:
        flag = ", anomaly" if out.get("is_anomaly") else ""
        return f"{out['fault_class']} (score {out.get('anomaly_score', float('nan')):.2f}{flag})"
    if "rul" in out:
        return f"RUL {out['rul']:.1f}"
    return str(out)


def table(items: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "time (UTC)": pd.Timestamp(i["created_at"]),
                "domain": i["domain"],
                "asset": i["asset_id"],
                "cycle": i.get("cycle"),
                "model": f"v{i['model_version']}",
                "prediction": summary(i),
                "label": i.get("label"),
                "id": i["prediction_id"],
            }
            for i in items
        ]
    )


def show_vibration(prediction_id: str) -> None:
    try:
        with st.spinner("Reading the archived window..."):
            doc = common.api().get(f"/predictions/{prediction_id}")
    except ApiError as exc:
        common.show_error(exc)
        return
    body, out = doc["input"], doc["output"]
    samples = decode_samples(body["samples"])
    rate, rpm = float(body["sample_rate"]), body.get("rpm")
    analysis = signals.analyse(samples, rate, rpm)
    cols = st.columns(4)
    cols[0].metric("Fault class", out.get("fault_class"))
    cols[1].metric(
        "Anomaly score",
        f"{out.get('anomaly_score', 0):.3f}",
        help=f"threshold {out.get('threshold', 0):.3f}",
    )
    cols[2].metric("Label", doc.get("label") or "not labelled")
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


def show_unit(unit_id: str) -> None:
    try:
        with st.spinner(f"Reading every archived cycle of {unit_id}..."):
            cycles = common.api().list_all("/predictions", domain="turbofan", asset_id=unit_id)
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


def render() -> None:
    st.title("Predictions")
    models = common.fetch("/models", "Reading the registry...") or {"domains": {}}
    domains = list(models["domains"]) or ["vibration", "turbofan"]
    cols = st.columns(4)
    domain = cols[0].selectbox("Domain", ["all", *domains], key="pred_domain")
    asset = cols[1].text_input("Asset / unit id", key="pred_asset").strip()
    with cols[2]:
        since = common.time_range("pred_range")
    versions = sorted(
        {
            v["version"]
            for name, d in models["domains"].items()
            if domain in ("all", name)
            for v in d["versions"]
        },
        key=int,
    )
    version = cols[3].selectbox("Model version", ["any", *versions], key="pred_version")
    page = st.number_input("Page", min_value=1, value=1, step=1, key="pred_page")
    listing = common.fetch(
        "/predictions",
        "Querying the archive...",
        domain=None if domain == "all" else domain,
        asset_id=asset or None,
        model_version=None if version == "any" else version,
        since=common.iso(since),
        offset=(int(page) - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    if listing is None:
        return
    items = listing["items"]
    if not items:
        st.info(
            "No archived prediction matches these filters. Widen the time range, clear the "
            "asset id, or send traffic (`machine-health simulate --api-url <API URL>`)."
        )
        return
    more = " (more on the next page)" if listing.get("next_offset") else ""
    st.caption(f"{len(items)} predictions on page {int(page)}, newest first{more}")
    st.dataframe(table(items), hide_index=True, key="pred_table")
    st.subheader("Details")
    labels = {
        i["prediction_id"]: f"{i['asset_id']} · {summary(i)} · {i['created_at']}" for i in items
    }
    chosen = st.selectbox("Prediction", list(labels), format_func=labels.get, key="pred_chosen")
    item = next(i for i in items if i["prediction_id"] == chosen)
    if item["domain"] == "vibration":
        show_vibration(chosen)
    elif item["domain"] == "turbofan":
        show_unit(item["asset_id"])


render()
