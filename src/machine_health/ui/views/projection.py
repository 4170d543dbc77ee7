"""Projection: PCA of archived feature vectors, coloured by prediction, label or model version.

The API computes the features (the domain's own feature functions, on the archived inputs) and
the PCA (scikit-learn); see `machine_health.api.projection` for why it is done there.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from machine_health.domains import DOMAINS, domain_module
from machine_health.ui import charts, common


def colours(domain: str) -> dict[str, bool]:
    """Colour options of the domain's points: column -> whether it is a category."""
    return domain_module(domain, "ui").VIEW.projection_colours  # type: ignore[union-attr]


def render() -> None:
    st.title("Projection")
    cols = st.columns(4)
    domain = cols[0].selectbox("Domain", list(DOMAINS), key="proj_domain")
    options = colours(domain)
    colour = cols[1].selectbox("Colour by", list(options), key=f"proj_colour_{domain}")
    limit = cols[2].select_slider("Newest predictions", [100, 300, 500, 1000], 300, key="proj_n")
    with cols[3]:
        since = common.time_range("proj_range")
    result = common.fetch(
        f"/projection/{domain}",
        "Computing features and the PCA on the API...",
        limit=limit,
        since=common.iso(since),
    )
    if result is None:
        return
    if not result["points"]:
        st.info(
            f"Only {result['n']} archived {domain} predictions in this range: a projection needs "
            "at least 3. Send traffic or widen the time range."
        )
        return
    frame = pd.DataFrame(result["points"])
    if options[colour]:
        frame[colour] = frame[colour].astype("string").fillna("not labelled")
    variance = result["explained_variance"]
    st.caption(
        f"{result['n']} predictions, {result['n_features']} standardised features; PC 1 explains "
        f"{variance[0]:.0%} and PC 2 {variance[1]:.0%} of their variance."
    )
    st.altair_chart(charts.projection(frame, colour, options[colour]), width="stretch")
    with st.expander("What the components are made of (largest loadings)"):
        for index, loadings in enumerate(result["loadings"], start=1):
            st.markdown(
                f"**PC {index}:** "
                + ", ".join(f"{w['feature']} ({w['weight']:+.2f})" for w in loadings)
            )


render()
