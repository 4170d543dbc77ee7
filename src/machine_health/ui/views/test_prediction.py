"""Test prediction: score an uploaded file or a real sample with POST /predict-test.

The form and the answer's main figures are the domain's (`<domain package>.ui.VIEW`).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from machine_health.domains import DOMAINS, domain_module
from machine_health.domains.view import DomainView
from machine_health.ui import common
from machine_health.ui.client import ApiError


def show_answer(view: DomainView, body: dict[str, Any], answer: dict[str, Any]) -> None:
    cols = st.columns(4)
    view.show_answer(body, answer, cols[:2])
    cols[2].metric("Model", f"v{answer['model']['version']}")
    cols[3].metric("Archived", answer["archived"])
    with st.expander("The API's answer"):
        st.json(answer)


def render() -> None:
    st.title("Test prediction")
    st.caption("Scores with the served model through POST /predict-test: nothing is archived.")
    domain = st.selectbox("Domain", list(DOMAINS), key="test_domain")
    view: DomainView = domain_module(domain, "ui").VIEW  # type: ignore[union-attr]
    body = view.test_body()
    if body is None:
        return
    if st.button("Predict (not archived)", key="test_predict", type="primary"):
        try:
            with st.spinner("Scoring..."):
                answer = common.api().post(f"/predict-test/{domain}", body)
        except ApiError as exc:
            common.show_error(exc)
            return
        show_answer(view, body, answer)


render()
