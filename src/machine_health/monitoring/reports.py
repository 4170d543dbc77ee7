"""Monitoring reports in the archive (collection `reports`) and the archived predictions they read.

One document per report: `kind` (drift, performance, retrain_trigger), `domain`, `created_at`
(the time the report speaks for, given by the caller, never read from the clock here),
`report_id` and the report's own fields at the top level (the embedded store has no dotted
projections). Reports are append-only: the latest one of a kind and domain is the current state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS, REPORTS, ensure_indexes_sync, sync_client
from machine_health.config import Settings
from machine_health.errors import StoreError

DRIFT, PERFORMANCE, TRIGGER = "drift", "performance", "retrain_trigger"
#: newest archived predictions a drift run reads from its window (bounds memory: a vibration
#: window is 8 kB); 5000 rows already resolve a KS distance of ~0.03.
MAX_ROWS = 5_000


@contextmanager
def store(settings: Settings) -> Iterator[Database]:
    """The archive database (sync client), indexes ensured; StoreError when unreachable."""
    client = sync_client(settings)
    try:
        db = client[settings.mongodb_db]
        ensure_indexes_sync(db)
        yield db
    finally:
        client.close()


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
    query: dict[str, Any] = {"kind": kind, "domain": domain}
    if at is not None:
        query["created_at"] = {"$lte": at}
    try:
        found = list(db[REPORTS].find(query).sort("created_at", DESCENDING).limit(1))
    except PyMongoError as exc:
        raise StoreError(f"cannot read {kind} reports of {domain}: {exc}") from exc
    if not found:
        return None
    found[0].pop("_id", None)
    return found[0]


def archived_predictions(
    db: Database,
    domain: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    labelled: bool = False,
    with_input: bool = True,
    limit: int = MAX_ROWS,
) -> list[dict[str, Any]]:
    """Archived predictions of `domain` created in `[start, end)` (newest first, at most `limit`);
    with `labelled`, only those whose label arrived (before `end`, when given)."""
    query: dict[str, Any] = {"domain": domain}
    created: dict[str, Any] = {}
    if start is not None:
        created["$gte"] = start
    if end is not None and not labelled:
        created["$lt"] = end
    if created:
        query["created_at"] = created
    if labelled:
        query["labelled_at"] = {"$lt": end} if end is not None else {"$ne": None}
    fields = ["prediction_id", "asset_id", "cycle", "output", "model_version", "label"]
    fields += ["input"] if with_input else []
    try:
        cursor = (
            db[PREDICTIONS]
            .find(query, {f: 1 for f in [*fields, "created_at"]})
            .sort("created_at", DESCENDING)
            .limit(limit)
        )
        return list(cursor)
    except PyMongoError as exc:
        raise StoreError(f"cannot read archived {domain} predictions: {exc}") from exc
