"""Altair charts of the UI (Streamlit draws them natively with `st.altair_chart`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

from machine_health.ui.signals import WindowAnalysis, defect_lines

HEIGHT = 260


def counts_over_time(over_time: Mapping[str, Mapping[str, int]]) -> alt.Chart:
    """Predictions per time bucket, one colour per domain."""
    rows = [
        {"time": pd.Timestamp(t), "domain": domain, "predictions": n}
        for domain, buckets in over_time.items()
        for t, n in buckets.items()
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("time:T", title="time (UTC)"),
            y=alt.Y("predictions:Q", stack=True),
            color="domain:N",
            tooltip=["time:T", "domain:N", "predictions:Q"],
        )
        .properties(height=HEIGHT)
    )


def counts_bar(counts: Mapping[str, int], what: str) -> alt.Chart:
    frame = pd.DataFrame({what: list(counts), "predictions": list(counts.values())})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(x=alt.X(f"{what}:N", sort="-y"), y="predictions:Q", tooltip=[what, "predictions"])
        .properties(height=HEIGHT)
    )


def rul_histogram(bins: Sequence[Mapping[str, Any]]) -> alt.Chart:
    rows = [
        {"RUL from": b["low"], "RUL to": b["high"], "predictions": b["n"]}
        for b in bins
        if b["low"] is not None
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("RUL from:Q", bin="binned", title="predicted RUL (cycles)"),
            x2="RUL to:Q",
            y="predictions:Q",
            tooltip=["RUL from:Q", "RUL to:Q", "predictions:Q"],
        )
        .properties(height=HEIGHT)
    )


def waveform(analysis: WindowAnalysis) -> alt.Chart:
    frame = pd.DataFrame({"time (s)": analysis.time_s, "amplitude": analysis.samples})
    return (
        alt.Chart(frame, title="Waveform")
        .mark_line(strokeWidth=0.8)
        .encode(x="time (s):Q", y="amplitude:Q")
        .properties(height=HEIGHT)
    )


def spectrum(analysis: WindowAnalysis) -> alt.Chart:
    frame = pd.DataFrame({"frequency (Hz)": analysis.freqs, "amplitude": analysis.spectrum})
    return (
        alt.Chart(frame, title="Spectrum (Hann window)")
        .mark_line(strokeWidth=0.8)
        .encode(x="frequency (Hz):Q", y="amplitude:Q")
        .properties(height=HEIGHT)
    )


def envelope_spectrum(analysis: WindowAnalysis) -> alt.LayerChart:
    """Envelope spectrum with the bearing defect frequencies (and harmonics) as dashed rules."""
    frame = pd.DataFrame(
        {"frequency (Hz)": analysis.envelope_freqs, "amplitude": analysis.envelope}
    )
    top = float(analysis.envelope_freqs.max()) if len(analysis.envelope_freqs) else 0.0
    marks = pd.DataFrame([r for r in defect_lines(analysis.defects) if float(r["hz"]) <= top])
    line = (
        alt.Chart(frame)
        .mark_line(strokeWidth=0.9, color="#444")
        .encode(x="frequency (Hz):Q", y="amplitude:Q")
    )
    rules = (
        alt.Chart(marks)
        .mark_rule(strokeDash=[4, 3])
        .encode(x="hz:Q", color=alt.Color("defect:N", title="defect"), tooltip=["line", "hz"])
    )
    return alt.layer(
        line, rules, title="Envelope spectrum with bearing defect frequencies"
    ).properties(height=HEIGHT)


def trajectories(frame: pd.DataFrame) -> alt.Chart:
    """Sensor values over cycles (long frame: cycle, sensor, value), one panel per sensor."""
    return (
        alt.Chart(frame)
        .mark_line()
        .encode(x="cycle:Q", y=alt.Y("value:Q", scale=alt.Scale(zero=False)), color="sensor:N")
        .properties(height=120, width=210)
        .facet(facet="sensor:N", columns=3)
        .resolve_scale(y="independent")
    )


def rul_over_cycles(frame: pd.DataFrame) -> alt.Chart:
    """Predicted RUL and (once the failure is known) true RUL against the cycle."""
    long = frame.melt("cycle", var_name="series", value_name="RUL").dropna()
    return (
        alt.Chart(long, title="Remaining useful life over cycles")
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(x="cycle:Q", y="RUL:Q", color="series:N", tooltip=["cycle", "series", "RUL"])
        .properties(height=HEIGHT)
    )


def projection(frame: pd.DataFrame, colour: str, nominal: bool) -> alt.Chart:
    kind = "N" if nominal else "Q"
    return (
        alt.Chart(frame)
        .mark_circle(size=45, opacity=0.8)
        .encode(
            x=alt.X("x:Q", title="PC 1"),
            y=alt.Y("y:Q", title="PC 2"),
            color=alt.Color(f"{colour}:{kind}", title=colour),
            tooltip=["prediction_id", "asset_id", "model_version", colour],
        )
        .properties(height=420)
        .interactive()
    )


def psi_bars(features: Sequence[Mapping[str, Any]], psi_min: float) -> alt.LayerChart:
    frame = pd.DataFrame(
        {
            "feature": [f["feature"] for f in features],
            "PSI": [f.get("psi") for f in features],
            "drifted": [bool(f.get("drifted")) for f in features],
        }
    )
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("feature:N", sort="-y"),
            y="PSI:Q",
            color=alt.Color(
                "drifted:N", scale=alt.Scale(domain=[False, True], range=["#8da0cb", "#e34a33"])
            ),
            tooltip=["feature", "PSI", "drifted"],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"PSI": [psi_min]})).mark_rule(strokeDash=[4, 3]).encode(y="PSI:Q")
    )
    return alt.layer(bars, rule).properties(height=HEIGHT)


def metric_over_time(
    frame: pd.DataFrame, metric: str, colour: str | None = None, share: bool = False
) -> alt.Chart:
    """A report metric against the report time (a share: on a 0-100 % axis)."""
    y = (
        alt.Y(f"{metric}:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
        if share
        else alt.Y(f"{metric}:Q")
    )
    encode: dict[str, Any] = {"x": alt.X("created_at:T", title="report time"), "y": y}
    if colour:
        encode["color"] = f"{colour}:N"
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(**encode, tooltip=list(frame.columns))
        .properties(height=HEIGHT)
    )
