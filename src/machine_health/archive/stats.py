"""Reads of archived predictions for the inspection UI's windowed overview (GET /stats/overview
with since/until). The all-time overview reads pre-aggregated counters (archive/counters.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from machine_health.archive import keys
from machine_health.archive.client import PREDICTIONS
from machine_health.errors import StoreError


async def window_rows(
    db: AsyncDatabase,
    domain: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50_000,
) -> list[dict[str, Any]]:
    """The top-level fields the overview counts, of a domain's predictions in `[since, until)`
    (bounds to the millisecond), the newest `limit` of them (the caller bounds what one request
    reads): a range on the indexed `domain_time_key`, walked newest first (archive/keys.py).
    """
    fields = {"created_at": 1, "asset_id": 1, "model_version": 1, "label": 1, "output": 1}
    query = {"domain_time_key": keys.time_range(keys.domain_prefix(domain), since, until)}
    try:
        cursor = (
            db[PREDICTIONS]
            .find(query, {**fields, "_id": 0})
            .sort([("domain_time_key", DESCENDING)])
            .limit(int(limit))
        )
        return [doc async for doc in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
