"""Overview: predictions per domain over time, anomaly rate, RUL distribution, champions, health."""

from __future__ import annotations

import streamlit as st

from machine_health.ui import charts, common

_SHOWN_METRICS = 6


def _champion(models: dict | None, domain: str) -> None:
    info = (models or {}).get("domains", {}).get(domain) or {}
    champion = info.get("aliases", {}).get("champion")
    served = info.get("served") or {}
    if champion is None:
        st.warning(
            f"No {domain} champion in the registry: train one (`machine-health train {domain}`)."
        )
        return
    version = next((v for v in info.get("versions", []) if v["version"] == champion), {})
    st.markdown(
        f"**Champion:** {info.get('name')} v{champion} · served here: v{served.get('version', '-')}"
    )
    metrics = {k: round(v, 4) for k, v in (version.get("metrics") or {}).items()}
    if metrics:
        st.dataframe(
            [{"metric": k, "value": v} for k, v in sorted(metrics.items())][: _SHOWN_METRICS * 4],
            hide_index=True,
            height=180,
        )


def render() -> None:
    st.title("Overview")
    left, right = st.columns([3, 1])
    with left:
        since = common.time_range("overview_range")
    with right:
        bucket = st.selectbox("Bucket", ["hour", "day"], key="overview_bucket")
        common.refresh_button("overview_refresh")
    overview = common.fetch(
        "/stats/overview", "Aggregating the archive...", since=common.iso(since), bucket=bucket
    )
    if overview is None:
        return
    models = common.fetch("/models", "Reading the registry...")
    archive = overview["archive"]
    cols = st.columns(3)
    cols[0].metric("Store", archive["store"])
    cols[1].metric("Spool depth", archive["spool_depth"], help="Predictions waiting for the store.")
    cols[2].metric("Replica", archive["replica"])
    if archive["spool_depth"]:
        st.warning("The store was unreachable: spooled predictions are replayed when it is back.")
    domains = overview["domains"]
    if not any(d["total"] for d in domains.values()):
        st.info(
            "No predictions archived in this range. Send traffic with "
            "`machine-health simulate --api-url <API URL>` (replays real test data) or POST "
            "/predict/{domain}, or choose a longer time range."
        )
    else:
        st.subheader("Predictions over time")
        st.altair_chart(
            charts.counts_over_time({n: d["over_time"] for n, d in domains.items()}),
            width="stretch",
        )
    for name, stats in domains.items():
        st.subheader(name.capitalize())
        cols = st.columns(4)
        cols[0].metric("Predictions", stats["total"])
        cols[1].metric("Labelled", stats["labelled"])
        cols[2].metric("Assets", stats["assets"])
        if "anomaly_rate" in stats:
            rate = stats["anomaly_rate"]
            cols[3].metric("Anomaly rate", "-" if rate is None else f"{rate:.1%}")
        elif "rul_histogram" in stats:
            cols[3].metric("Model versions", len(stats["by_model_version"]))
        _champion(models, name)
        if not stats["total"]:
            continue
        if stats.get("by_fault_class"):
            st.caption("Predicted fault class")
            st.altair_chart(
                charts.counts_bar(stats["by_fault_class"], "fault class"), width="stretch"
            )
        if stats.get("rul_histogram"):
            st.caption("Predicted RUL distribution")
            st.altair_chart(charts.rul_histogram(stats["rul_histogram"]), width="stretch")


render()
