"""Entry point of the inspection UI: `machine-health ui` (streamlit run this file).

Signed out, the only page is the sign-in form (the API's OAuth2 token flow). Signed in, the
navigation lists the pages the user's role can use: test predictions need a role that may
predict; promote / rollback / reload / trigger buttons appear for admins only (and the API
refuses them to anyone else anyway).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from machine_health.ui import common

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(
    page_title="machine-health",
    page_icon=":material/monitor_heart:",
    layout="wide",
    initial_sidebar_state="expanded",
)


def _page(name: str, title: str, icon: str) -> st.Page:
    return st.Page(str(VIEWS / f"{name}.py"), title=title, icon=f":material/{icon}:", url_path=name)


if not st.session_state.get("token"):
    navigation = st.navigation([_page("login", "Sign in", "login")])
else:
    pages = [
        _page("overview", "Overview", "dashboard"),
        _page("predictions", "Predictions", "table_rows"),
        _page("projection", "Projection", "scatter_plot"),
        _page("models", "Models", "model_training"),
        _page("drift", "Drift and performance", "monitoring"),
        _page("retraining", "Retraining", "autorenew"),
    ]
    if common.can_predict():
        pages.append(_page("test_prediction", "Test prediction", "science"))
    navigation = st.navigation(pages)
    with st.sidebar:
        st.caption(f"Signed in as **{st.session_state.get('username')}** ({common.role()})")
        st.caption(f"API: {common.api().base_url}")
        if st.button("Sign out", key="sign_out"):
            for key in ("token", "role", "username"):
                st.session_state.pop(key, None)
            common.clear_cache()
            st.rerun()
navigation.run()
