"""What every page shares: the session's API client, cached reads, roles, errors, time ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from machine_health.config import Settings
from machine_health.ui.client import ApiClient, ApiError

#: Cached API reads expire quickly: the archive changes with every prediction.
CACHE_TTL_S = 15
#: What the UI shows per role (the API refuses the rest anyway, see api/security.py).
PREDICT_ROLES = frozenset({"admin", "operator"})
ADMIN_ROLES = frozenset({"admin"})
RANGES: dict[str, timedelta | None] = {
    "last hour": timedelta(hours=1),
    "last 24 hours": timedelta(hours=24),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
    "all time": None,
}


def settings() -> Settings:
    """The UI process's settings (MH_* environment and .env; cheap to read per run)."""
    return Settings()


def api() -> ApiClient:
    """The signed-in user's client (the API URL can be set per session, e.g. by tests)."""
    url = st.session_state.get("api_url") or settings().api_url
    return ApiClient(url, st.session_state.get("token"))


def role() -> str:
    return str(st.session_state.get("role") or "")


def is_admin() -> bool:
    return role() in ADMIN_ROLES


def can_predict() -> bool:
    return role() in PREDICT_ROLES


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _cached_get(base_url: str, token: str | None, path: str, params: tuple) -> Any:
    return ApiClient(base_url, token).get(path, **dict(params))


def fetch(path: str, spinner: str | None = None, **params: Any) -> Any:
    """A cached GET of the API, behind a spinner; None after showing the error."""
    client = api()
    key = tuple(sorted((k, v) for k, v in params.items() if v is not None))
    try:
        with st.spinner(spinner or "Asking the API..."):
            return _cached_get(client.base_url, client.token, path, key)
    except ApiError as exc:
        show_error(exc)
        return None


def archived_prediction(prediction_id: str, spinner: str) -> dict[str, Any] | None:
    """GET /predictions/{prediction_id} (uncached: the whole archived document, input
    included), behind a spinner; None after showing the error."""
    try:
        with st.spinner(spinner):
            return api().get(f"/predictions/{prediction_id}")
    except ApiError as exc:
        show_error(exc)
        return None


def clear_cache() -> None:
    _cached_get.clear()


def show_error(exc: ApiError) -> None:
    """An API error as a red box; an expired or revoked token sends the user to log in again."""
    if exc.status == 401:
        st.session_state.pop("token", None)
        st.error(f"Your session ended ({exc.reason}). Sign in again.")
    elif exc.status == 403:
        st.error(f"Not allowed for your role: {exc.reason}")
    else:
        st.error(exc.reason)


def time_range(key: str, default: str = "all time") -> datetime | None:
    """A range selector; returns the start of the chosen range (UTC) or None for all time."""
    label = st.selectbox("Time range", list(RANGES), index=list(RANGES).index(default), key=key)
    span = RANGES[label]
    return None if span is None else datetime.now(UTC) - span


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def refresh_button(key: str) -> None:
    if st.button("Refresh", key=key, help="Read the archive again (reads are cached 15 s)."):
        clear_cache()
