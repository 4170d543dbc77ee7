"""Aggregations of archived predictions for the inspection UI (GET /stats/..., /projection/...).

Inside the embedded store's subset: `$count`, `$group` on ONE key, `$bucket`, `$dateToString`
(not `$dateTrunc`/`$min` of dates, which it returns as JSON text), no `$cond`. They count ALL
time: the embedded store ignores a date range in an aggregate `$match` (`window_rows` serves
time windows).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS
from machine_health.archive.filters import in_window, prediction_filter, utc_ms
from machine_health.errors import InputError, StoreError

GROUP_KEYS: dict[str, str] = {
    "model_version": "$model_version",
    "asset_id": "$asset_id",
    "fault_class": "$output.fault_class",
    "is_anomaly": "$output.is_anomaly",
    "label": "$label",
}
_BUCKET_FORMATS = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z"}


async def _aggregate(db: AsyncDatabase, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        cursor = await db[PREDICTIONS].aggregate(pipeline)
        return [row async for row in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot aggregate the archive: {exc}") from exc


def _match(domain: str, *, labelled: bool = False) -> dict[str, Any]:
    match = prediction_filter(domain=domain)
    if labelled:
        match["label"] = {"$ne": None}
    return match


async def count_archived(db: AsyncDatabase, domain: str, *, labelled: bool = False) -> int:
    """Archived predictions of a domain (only the labelled ones if asked)."""
    rows = await _aggregate(db, [{"$match": _match(domain, labelled=labelled)}, {"$count": "n"}])
    return int(rows[0]["n"]) if rows else 0


async def count_by_time(db: AsyncDatabase, domain: str, *, bucket: str = "hour") -> dict[str, int]:
    """Predictions per UTC hour or day (ISO start of the bucket -> count), in time order."""
    if bucket not in _BUCKET_FORMATS:
        raise InputError(f"bucket: one of {', '.join(_BUCKET_FORMATS)}")
    key = {"$dateToString": {"date": "$created_at", "format": _BUCKET_FORMATS[bucket]}}
    pipeline = [{"$match": _match(domain)}, {"$group": {"_id": key, "n": {"$sum": 1}}}]
    rows = await _aggregate(db, pipeline)
    return {str(r["_id"]): int(r["n"]) for r in sorted(rows, key=lambda r: str(r["_id"]))}


async def count_by(db: AsyncDatabase, domain: str, key: str) -> dict[str, int]:
    """Predictions per value of one whitelisted field (`GROUP_KEYS`); None as "none"."""
    if key not in GROUP_KEYS:
        raise InputError(f"group key: one of {', '.join(GROUP_KEYS)}")
    pipeline = [
        {"$match": _match(domain)},
        {"$group": {"_id": GROUP_KEYS[key], "n": {"$sum": 1}}},
    ]
    out: dict[str, int] = {}
    for row in await _aggregate(db, pipeline):
        value = row["_id"]
        if value is None:
            name = "none"
        elif key == "is_anomaly":  # the embedded store groups booleans as 0/1
            name = "true" if value else "false"
        else:
            name = str(value)
        out[name] = out.get(name, 0) + int(row["n"])
    return dict(sorted(out.items()))


async def rul_histogram(
    db: AsyncDatabase, edges: list[float], *, domain: str
) -> list[dict[str, Any]]:
    """Predicted RUL counts per `[edges[i], edges[i+1])`; values beyond the edges as "other"."""
    pipeline = [
        {"$match": _match(domain)},
        {
            "$bucket": {
                "groupBy": "$output.rul",
                "boundaries": [float(e) for e in edges],
                "default": "other",
                "output": {"n": {"$sum": 1}},
            }
        },
    ]
    counts: dict[float | str, int] = {}
    for row in await _aggregate(db, pipeline):
        # the bucket id is its lower boundary (an int or a float, by store) or "other"
        key = row["_id"] if row["_id"] == "other" else float(row["_id"])
        counts[key] = int(row["n"])
    bins = [
        {"low": float(lo), "high": float(hi), "n": counts.get(float(lo), 0)}
        for lo, hi in itertools.pairwise(edges)
    ]
    return [*bins, {"low": None, "high": None, "n": counts.get("other", 0)}]


async def window_rows(
    db: AsyncDatabase,
    domain: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50_000,
) -> list[dict[str, Any]]:
    """The top-level fields the overview counts, of a domain's predictions in `[since, until)`,
    the newest `limit` of them (the caller bounds what one request reads).

    For time windows: the embedded store applies date ranges in `find` but ignores them in an
    aggregate `$match` (see tests/ui/test_api_routes.py), so windowed counts are made from these.
    """
    fields = {"created_at": 1, "asset_id": 1, "model_version": 1, "label": 1, "output": 1}
    since, until = utc_ms(since), utc_ms(until)
    try:
        cursor = (
            db[PREDICTIONS]
            .find(prediction_filter(domain=domain, since=since, until=until), {**fields, "_id": 0})
            .sort([("created_at", DESCENDING)])
            .limit(int(limit))
        )
        return [doc async for doc in cursor if in_window(doc, since, until)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
