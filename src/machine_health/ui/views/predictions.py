"""Predictions: the archive filtered by domain, asset, time and model version; one in detail.

One prediction in detail is drawn by its domain's view (`<domain package>.ui.VIEW`): e.g. a
vibration window's spectra, or a turbofan unit's sensor trajectories and RUL over cycles.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from machine_health.domains import DOMAINS, domain_module
from machine_health.domains.view import DomainView
from machine_health.ui import common

PAGE_SIZE = 50


def view(domain: str) -> DomainView | None:
    """The domain's page parts, None for a domain this UI does not know."""
    module = domain_module(domain, "ui") if domain in DOMAINS else None
    return getattr(module, "VIEW", None)


def summary(item: dict[str, Any]) -> str:
    """One line saying what the model answered."""
    out = item.get("output") or {}
    shown = view(item["domain"])
    try:
        return shown.summary(out) if shown else str(out)
    except (KeyError, TypeError, ValueError):  # an output of another shape: show it raw
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


def render() -> None:
    st.title("Predictions")
    models = common.fetch("/models", "Reading the registry...") or {"domains": {}}
    domains = list(models["domains"]) or list(DOMAINS)
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
    filters = {
        "domain": None if domain == "all" else domain,
        "asset_id": asset or None,
        "model_version": None if version == "any" else version,
        "since": common.iso(since),
    }
    # Pages are walked by cursor (keyset pagination): the cursors of the pages shown so far,
    # kept while the filters stay the same.
    if st.session_state.get("pred_filters") != filters:
        st.session_state["pred_filters"], st.session_state["pred_cursors"] = filters, [None]
    cursors: list[str | None] = st.session_state["pred_cursors"]
    listing = common.fetch(
        "/predictions", "Querying the archive...", **filters, cursor=cursors[-1], limit=PAGE_SIZE
    )
    if listing is None:
        return
    page = len(cursors)
    nav = st.columns(2)
    if page > 1 and nav[0].button("Newest page", key="pred_first"):
        st.session_state["pred_cursors"] = [None]
        st.rerun()
    if listing.get("next_cursor") and nav[1].button("Older page", key="pred_next"):
        cursors.append(listing["next_cursor"])
        st.rerun()
    items = listing["items"]
    if not items:
        st.info(
            "No archived prediction matches these filters. Widen the time range, clear the "
            "asset id, or send traffic (`machine-health simulate --api-url <API URL>`)."
        )
        return
    more = " (more on the next page)" if listing.get("next_cursor") else ""
    st.caption(f"{len(items)} predictions on page {int(page)}, newest first{more}")
    st.dataframe(table(items), hide_index=True, key="pred_table")
    st.subheader("Details")
    labels = {
        i["prediction_id"]: f"{i['asset_id']} · {summary(i)} · {i['created_at']}" for i in items
    }
    chosen = st.selectbox("Prediction", list(labels), format_func=labels.get, key="pred_chosen")
    item = next(i for i in items if i["prediction_id"] == chosen)
    shown = view(item["domain"])
    if shown is not None:
        shown.show_prediction(item)
    show_explanation(item.get("explanation"))
    show_shadow(item)


def show_explanation(explanation: dict[str, Any] | None) -> None:
    """Why the model answered so: the summary line, the ranked evidence, the rest as JSON."""
    st.subheader("Why")
    if not explanation:
        st.caption(
            "No explanation archived for this prediction (it is added in the background "
            "shortly after the answer; a busy replica skips some; ask with `?explain=true`)."
        )
        return
    st.markdown(f"**{explanation.get('summary', '')}** ({explanation.get('method', '?')})")
    evidence = explanation.get("evidence") or []
    if evidence:
        st.dataframe(pd.DataFrame(evidence), hide_index=True, key="pred_evidence")
    with st.expander("The whole explanation"):
        st.json(explanation)


def show_shadow(item: dict[str, Any]) -> None:
    """What the shadow version made of the same request (never answered)."""
    shadow = item.get("shadow")
    if not shadow:
        return
    version, status = shadow.get("model_version"), shadow.get("status")
    if status == "ok":
        said = summary({**item, "output": shadow["output"]})
        st.caption(f"Shadow v{version} (not answered): {said}")
    else:
        st.caption(f"Shadow v{version}: {status} ({shadow.get('reason', '')})")


render()
