"""Monitoring reports in the archive (collection `reports`).

One document per report: `kind` (drift, performance, retrain_trigger, shadow), `domain`,
`created_at` (the time the report speaks for, given by the caller, never read from the clock here),
`report_id` and the report's own fields at the top level (the embedded store has no dotted
projections). Reports are append-only: the latest one of a kind and domain is the current state.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.client import REPORTS
from machine_health.archive.filters import clean
from machine_health.errors import StoreError

DRIFT, PERFORMANCE, TRIGGER = "drift", "performance", "retrain_trigger"
#: champion vs shadow on the same labelled live requests (monitoring/shadow.py)
SHADOW = "shadow"


def save(
    db: Database, kind: str, domain: str, report: Mapping[str, Any], *, created_at: datetime
) -> str:
    """Append a report; returns its id."""
    report_id = uuid.uuid4().hex
    document = {**report, "kind": kind, "domain": domain, "created_at": created_at}
    document["report_id"] = report_id
    try:
        db[REPORTS].insert_one(document)
    except PyMongoError as exc:
        raise StoreError(f"cannot store the {kind} report of {domain}: {exc}") from exc
    return report_id


def latest(
    db: Database, kind: str, domain: str, *, at: datetime | None = None
) -> dict[str, Any] | None:
    """The newest report of `kind` for `domain` created at or before `at` (None when none)."""
    query: dict[str, Any] = {"kind": str(kind), "domain": str(domain)}
    if at is not None:
        query["created_at"] = {"$lte": at}
    try:
        found = list(db[REPORTS].find(query).sort("created_at", DESCENDING).limit(1))
    except PyMongoError as exc:
        raise StoreError(f"cannot read {kind} reports of {domain}: {exc}") from exc
    return clean(found[0]) if found else None


def trigger_of_run(db: Database, domain: str, run_id: str) -> dict[str, Any] | None:
    """The retrain-trigger report a run recorded (None when it recorded none)."""
    query = {"kind": TRIGGER, "domain": str(domain), "run_id": str(run_id)}
    try:
        found = db[REPORTS].find_one(query)
    except PyMongoError as exc:
        raise StoreError(f"cannot read the retrain trigger of run {run_id!r}: {exc}") from exc
    return clean(found) if found else None


async def latest_reports(
    db: AsyncDatabase, kind: str, *, domain: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Monitoring reports of one kind (and domain), newest first (the API)."""
    query: dict[str, Any] = {"kind": str(kind)}
    if domain is not None:
        query["domain"] = str(domain)
    try:
        cursor = db[REPORTS].find(query).sort([("created_at", DESCENDING)]).limit(int(limit))
        return [clean(doc) async for doc in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot read {kind} reports: {exc}") from exc
