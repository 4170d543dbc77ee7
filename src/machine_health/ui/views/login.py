"""Sign in with the API's token flow (POST /token)."""

from __future__ import annotations

import streamlit as st

from machine_health.ui import common
from machine_health.ui.client import ApiError


def render() -> None:
    st.title("machine-health")
    st.write(
        "Inspect what the platform predicted, on what, with which model, and how it compares "
        "with the truth. Sign in with your API account."
    )
    client = common.api()
    with st.form("login"):
        username = st.text_input("Username", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        try:
            answer = client.login(username, password)
        except ApiError as exc:
            st.error(f"Sign-in refused: {exc.reason}")
            return
        st.session_state.update(
            token=answer["access_token"], role=answer["role"], username=username
        )
        st.rerun()
    st.caption(
        f"API: {client.base_url}. No account? An admin creates one with "
        "`machine-health users create NAME --role viewer` (or POST /register)."
    )


render()
