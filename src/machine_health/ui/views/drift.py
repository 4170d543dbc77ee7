"""Drift and performance: the monitoring reports, per feature and over time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from machine_health.domains import DOMAINS, domain_module
from machine_health.domains.view import DomainView
from machine_health.ui import charts, common

_HISTORY = 50


def show_drift(domain: str) -> None:
    listing = common.fetch(
        "/reports/drift", "Reading drift reports...", domain=domain, limit=_HISTORY
    )
    if listing is None:
        return
    reports = listing["items"]
    if not reports:
        st.info(
            f"No drift report for {domain} yet. The retrain DAG computes one on schedule; run "
            f"one now with `machine-health drift --domain {domain} --window 24h`."
        )
        return
    latest = reports[0]
    cols = st.columns(4)
    cols[0].metric("Status", "FLAGGED" if latest.get("flagged") else latest.get("status", "-"))
    cols[1].metric(
        "Drifted share",
        f"{latest.get('drift_share', 0):.0%}",
        help=f"flagged at {latest.get('threshold', 0):.0%}",
    )
    cols[2].metric("Inputs compared", latest.get("n_rows", 0))
    cols[3].metric("Model version", f"v{latest.get('model_version') or '-'}")
    st.caption(
        f"Latest report: {latest['created_at']} (window {latest.get('window_start')} to "
        f"{latest.get('window_end')})"
    )
    features = latest.get("features") or []
    if features:
        st.markdown("**Per feature** (PSI; dashed line = the PSI a drift must reach)")
        st.altair_chart(charts.psi_bars(features, latest.get("psi_min", 0.25)), width="stretch")
        frame = pd.DataFrame(features)[["feature", "psi", "ks", "p_adjusted", "drifted"]]
        st.dataframe(frame.sort_values("psi", ascending=False), hide_index=True, height=260)
    bands = latest.get("bands") or {}
    if bands:
        st.markdown("**Per spectral band**")
        st.dataframe(
            pd.DataFrame(
                [
                    {"band": b, "drifted": v["drifted"], "max PSI": v["psi_max"]}
                    for b, v in bands.items()
                ]
            ),
            hide_index=True,
        )
    if len(reports) > 1:
        history = pd.DataFrame(
            {
                "created_at": pd.to_datetime([r["created_at"] for r in reports]),
                "drift_share": [r.get("drift_share", 0) for r in reports],
            }
        )
        st.markdown("**Over time**")
        st.altair_chart(
            charts.metric_over_time(history, "drift_share", share=True), width="stretch"
        )


def _performance_rows(reports: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {"created_at": pd.Timestamp(r["created_at"]), **v}
        for r in reports
        for v in r.get("versions", [])
    ]
    return pd.DataFrame(rows)


def show_performance(domain: str) -> None:
    view: DomainView = domain_module(domain, "ui").VIEW  # type: ignore[union-attr]
    listing = common.fetch(
        "/reports/performance", "Reading performance reports...", domain=domain, limit=_HISTORY
    )
    if listing is None:
        return
    reports = listing["items"]
    if not reports:
        st.info(
            f"No live-performance report for {domain} yet: it needs labels ({view.labels_hint}) "
            "and a monitoring run (the retrain DAG, or "
            f"`machine-health performance --domain {domain}`)."
        )
        return
    latest = reports[0]
    st.caption(
        f"Latest report: {latest['created_at']}, {latest.get('n_labelled', 0)} labelled predictions"
    )
    degraded = latest.get("degraded_versions") or []
    if degraded:
        st.error(f"Degraded model versions: {', '.join('v' + v for v in degraded)}")
    current = pd.DataFrame(latest.get("versions") or [])
    if current.empty:
        st.info("No labelled prediction in the latest report's window.")
        return
    st.dataframe(current, hide_index=True)
    metric = view.performance_metric
    history = _performance_rows(reports)
    if len(reports) > 1 and metric in history:
        st.markdown(f"**{metric} over time, per model version**")
        st.altair_chart(charts.metric_over_time(history, metric, "model_version"), width="stretch")


def render() -> None:
    st.title("Drift and performance")
    common.refresh_button("drift_refresh")
    domain = st.selectbox("Domain", list(DOMAINS), key="drift_domain")
    drift_tab, performance_tab = st.tabs(["Input drift", "Live performance"])
    with drift_tab:
        show_drift(domain)
    with performance_tab:
        show_performance(domain)


render()
