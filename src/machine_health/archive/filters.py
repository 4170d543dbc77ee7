"""Time bounds of reads on archived predictions, and documents as the API shows them.

The reads themselves are ranges on the sort keys (archive/keys.py), exact to the millisecond;
`in_window` filters rows by `created_at` where a read ranges on another key (the label's).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc_ms(moment: datetime | None) -> datetime | None:
    """A bound as BSON keeps it: UTC (a naive time is UTC, as pymongo reads it), whole ms."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def in_window(doc: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    """Whether a document's `created_at` lies in `[since, until)`."""
    created = doc.get("created_at")
    if not isinstance(created, datetime):
        return False
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return (since is None or created >= since) and (until is None or created < until)


def clean(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without the store's `_id` (an ObjectId: not JSON, never shown)."""
    doc.pop("_id", None)
    return doc
