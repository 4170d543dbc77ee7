"""The turbofan views show an answer's novelty flag (real Streamlit script runs, AppTest)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _novelty_app(novel: bool) -> None:
    from machine_health.domains.turbofan.ui import VIEW, show_novelty

    output = {
        "rul": 41.5,
        "novelty": {"novel": novel, "score": 45.3 if novel else 0.4,
                    "reasons": ["operating settings outside every known regime"] if novel else []},
    }  # fmt: skip
    show_novelty(output)
    import streamlit as st

    st.text(VIEW.summary(output))


def test_a_novel_answer_is_flagged_and_a_known_one_is_not() -> None:
    novel = AppTest.from_function(_novelty_app, args=(True,)).run(timeout=60)
    assert not novel.exception
    assert "score 45.3" in novel.warning[0].value
    assert "outside every known regime" in novel.warning[0].value
    assert novel.text[0].value == "RUL 41.5 (novel unit)"
    known = AppTest.from_function(_novelty_app, args=(False,)).run(timeout=60)
    assert not known.exception and len(known.warning) == 0
    assert known.text[0].value == "RUL 41.5"
