"""Archived predictions: their ids, reads for the API (async) and for steps and the CLI (sync),
and the repair of a unit's cycles. Labels are in `archive/labels.py`, aggregates in
`archive/stats.py`.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS
from machine_health.archive.filters import clean, in_window, prediction_filter, utc_ms
from machine_health.errors import NotFound, StoreError

_NAMESPACE = uuid.UUID("6f1c1a52-4f7e-4d4e-9a51-8f3a3b7c2d10")
# Ids (not secrets) from a PRNG seeded by the OS once per process: os.urandom per request costs
# ~0.1 ms on small VMs, which the load benchmark showed on every prediction.
_rng = random.Random(os.urandom(32))  # noqa: S311 - ids, not secrets
_rng_pid = os.getpid()


def random_id() -> str:
    """32 random hex digits, unique across processes (re-seeded after a fork)."""
    global _rng, _rng_pid
    if os.getpid() != _rng_pid:
        _rng, _rng_pid = random.Random(os.urandom(32)), os.getpid()  # noqa: S311
    return f"{_rng.getrandbits(128):032x}"


def new_prediction_id(user: str, idempotency_key: str | None) -> str:
    """A fresh id, or, for an idempotent request, the SAME id for the same user and key.

    The unique index on `prediction_id` then makes a second document impossible, even when two
    replicas receive the retry at the same moment.
    """
    if idempotency_key is None:
        return random_id()
    return uuid.uuid5(_NAMESPACE, f"{user}\x00{idempotency_key}").hex


# --- async (API) ---------------------------------------------------------------------------
async def find_predictions(
    db: AsyncDatabase,
    *,
    domain: str | None = None,
    asset_id: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    skip: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Archived predictions matching the filters, newest first, one page.

    The store is asked for whole-second bounds (see `filters.prediction_filter`). Newest first,
    the records it adds after a sub-second `until` come first: they are counted and skipped;
    those it adds before a sub-second `since` come last: they are dropped from the page, which
    then ends the listing.
    """
    since, until = utc_ms(since), utc_ms(until)
    others = {"domain": domain, "asset_id": asset_id, "model_version": model_version}
    query = prediction_filter(**others, since=since, until=until)
    try:
        extra = 0
        if until is not None and until.microsecond:
            start = until.replace(microsecond=0)
            if since is not None:
                start = max(start, since.replace(microsecond=0))
            second = db[PREDICTIONS].find(
                prediction_filter(**others, since=start, until=until), {"created_at": 1, "_id": 0}
            )
            extra = len([doc async for doc in second if not in_window(doc, None, until)])
        cursor = (
            db[PREDICTIONS]
            .find(query)
            .sort([("created_at", DESCENDING), ("prediction_id", ASCENDING)])
            .skip(int(skip) + extra)
            .limit(int(limit))
        )
        return [clean(doc) async for doc in cursor if in_window(doc, since, until)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc


async def get_prediction(db: AsyncDatabase, prediction_id: str) -> dict[str, Any]:
    """One archived prediction; NotFound when absent."""
    doc = await find_prediction(db, prediction_id)
    if doc is None:
        raise NotFound(f"no archived prediction {prediction_id!r}")
    return doc


async def find_prediction(db: AsyncDatabase, prediction_id: str) -> dict[str, Any] | None:
    """One archived prediction, or None."""
    try:
        doc = await db[PREDICTIONS].find_one({"prediction_id": str(prediction_id)})
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
    return clean(doc) if doc else None


async def unit_history(
    db: AsyncDatabase, unit_id: str, limit: int, *, domain: str
) -> list[dict[str, Any]]:
    """The last `limit` archived cycles of a unit, oldest first."""
    try:
        cursor = (
            db[PREDICTIONS]
            .find(
                {"domain": domain, "asset_id": str(unit_id)},
                {"cycle": 1, "input": 1, "_id": 0},
            )
            .sort([("cycle", DESCENDING)])
            .limit(int(limit))
        )
        rows = [doc async for doc in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the unit's history: {exc}") from exc
    return rows[::-1]


# --- repairing a unit (admin; audited by the caller, archive/audit.py) --------------------------
def _unit_cycles(domain: str, unit_id: str, from_cycle: int | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {"domain": str(domain), "asset_id": str(unit_id)}
    if from_cycle is not None:
        query["cycle"] = {"$gte": int(from_cycle)}
    return query


async def purge_unit_cycles(
    db: AsyncDatabase, domain: str, unit_id: str, from_cycle: int
) -> dict[str, Any]:
    """Delete a unit's archived cycles >= `from_cycle`: `deleted` and the unit's `last_cycle`
    left (None: none). The caller resets the unit's serving state (archive/unit_state.py)."""
    coll = db[PREDICTIONS]
    try:
        result = await coll.delete_many(_unit_cycles(domain, unit_id, from_cycle))
        last = await coll.find_one(
            _unit_cycles(domain, unit_id), {"cycle": 1, "_id": 0}, sort=[("cycle", DESCENDING)]
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot purge the cycles of unit {unit_id!r}: {exc}") from exc
    return {"deleted": int(result.deleted_count), "last_cycle": (last or {}).get("cycle")}


def purge_unit_cycles_sync(
    db: Database, domain: str, unit_id: str, from_cycle: int
) -> dict[str, Any]:
    """Sync twin of `purge_unit_cycles` (the CLI)."""
    coll = db[PREDICTIONS]
    try:
        result = coll.delete_many(_unit_cycles(domain, unit_id, from_cycle))
        last = coll.find_one(
            _unit_cycles(domain, unit_id), {"cycle": 1, "_id": 0}, sort=[("cycle", DESCENDING)]
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot purge the cycles of unit {unit_id!r}: {exc}") from exc
    return {"deleted": int(result.deleted_count), "last_cycle": (last or {}).get("cycle")}


# --- sync (pipeline steps, monitoring runs, CLI) ------------------------------------------------
def count_predictions(db: Database, domain: str | None = None) -> int:
    """Archived predictions (of a domain), counted by an aggregate (fast on the embedded store)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": prediction_filter(domain=domain)},
        {"$count": "n"},
    ]
    try:
        rows = list(db[PREDICTIONS].aggregate(pipeline))
    except PyMongoError as exc:
        raise StoreError(f"cannot count the archive: {exc}") from exc
    return int(rows[0]["n"]) if rows else 0


#: the fields a monitoring run reads of each prediction (`input` only when asked: a vibration
#: window is 8 kB)
_MONITORED = ("prediction_id", "asset_id", "cycle", "output", "model_version", "label")


def recent_predictions(
    db: Database,
    domain: str,
    *,
    limit: int,
    start: datetime | None = None,
    end: datetime | None = None,
    labelled: bool = False,
    with_input: bool = True,
) -> list[dict[str, Any]]:
    """Archived predictions of `domain` created in `[start, end)`, newest first, at most `limit`
    (what drift and live-performance reports are made from); with `labelled`, only those whose
    label arrived (before `end`, when given: then `end` bounds the label, not the creation)."""
    query: dict[str, Any] = {"domain": str(domain)}
    created: dict[str, Any] = {}
    if start is not None:
        created["$gte"] = start
    if end is not None and not labelled:
        created["$lt"] = end
    if created:
        query["created_at"] = created
    if labelled:
        query["labelled_at"] = {"$lt": end} if end is not None else {"$ne": None}
    fields = [*_MONITORED, "created_at", *(["input"] if with_input else [])]
    try:
        cursor = (
            db[PREDICTIONS]
            .find(query, dict.fromkeys(fields, 1))
            .sort("created_at", DESCENDING)
            .limit(int(limit))
        )
        return list(cursor)
    except PyMongoError as exc:
        raise StoreError(f"cannot read archived {domain} predictions: {exc}") from exc
