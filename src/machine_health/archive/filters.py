"""Filters on archived predictions, built from typed arguments only, and their time windows.

No caller passes a query document, an operator or a field name: every value is `str()`ed or a
datetime, so a request can never inject one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def prediction_filter(
    *,
    domain: str | None = None,
    asset_id: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Equality on the given fields and `created_at` in `[since, until)` widened to whole
    seconds (see `in_window`)."""
    query: dict[str, Any] = {}
    if domain is not None:
        query["domain"] = str(domain)
    if asset_id is not None:
        query["asset_id"] = str(asset_id)
    if model_version is not None:
        query["model_version"] = str(model_version)
    window: dict[str, datetime] = {}
    if since is not None:
        window["$gte"] = since.replace(microsecond=0)
    if until is not None:
        window["$lt"] = _ceil_second(until)
    if window:
        query["created_at"] = window
    return query


# The embedded store compares dates at whole seconds (SQLite `datetime()`), MongoDB at
# milliseconds. A bound on a whole second is exact on both, so `prediction_filter` widens a time
# window to whole seconds and the few records of a boundary second are sorted out by `in_window`.
def utc_ms(moment: datetime | None) -> datetime | None:
    """A bound as BSON keeps it: UTC (a naive time is UTC, as pymongo reads it), whole ms."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def in_window(doc: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    """Whether a document's `created_at` lies in `[since, until)` (exact, below the second)."""
    created = doc.get("created_at")
    if not isinstance(created, datetime):
        return False
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return (since is None or created >= since) and (until is None or created < until)


def clean(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without the store's `_id` (an ObjectId: not JSON, never shown)."""
    doc.pop("_id", None)
    return doc
