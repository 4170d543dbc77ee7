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

from pymongo import DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive import counters, keys
from machine_health.archive.client import PREDICTIONS
from machine_health.archive.filters import clean, in_window, utc_ms
from machine_health.archive.labels import labelled_filter
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
#: how many index entries a filtered listing walks per page before it returns what it found
#: (with a cursor to go on): a rare model version never makes one request read the archive
_WALK_ROWS = 5000


def _listing_ranges(
    domains: list[str],
    asset_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after: str | None,
) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    """The key field a listing walks and, per domain, its range (newest first from `after`)."""
    field = "asset_time_key" if asset_id is not None else "domain_time_key"
    ranges = []
    for domain in domains:
        prefix = keys.asset_prefix(domain, asset_id) if asset_id else keys.domain_prefix(domain)
        bounds = keys.time_range(prefix, since, until)
        if after is not None:
            bounds["$lt"] = min(bounds["$lt"], prefix + after)
        ranges.append((prefix, bounds))
    return field, ranges


async def find_page(
    db: AsyncDatabase,
    *,
    domains: list[str],
    asset_id: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of archived predictions of `domains`, newest first, created in
    `[since, until)`, after the cursor `after`; and the cursor of the next page (None: no more).

    Keyset pagination: each domain's page is a range on one indexed key (archive/keys.py),
    whatever the archive's size or the page's depth; pages of several domains are merged by
    time. With a `model_version` filter at most `_WALK_ROWS` entries per domain are walked:
    the page may then hold fewer than `limit` items and still have a next cursor.
    """
    field, ranges = _listing_ranges(domains, asset_id, utc_ms(since), utc_ms(until), after)
    found: list[tuple[str, dict[str, Any]]] = []
    stops: list[str] = []
    try:
        for prefix, bounds in ranges:
            rows, stopped_at = await _walk(db, field, bounds, model_version, limit)
            found += [(doc[field][len(prefix) :], doc) for doc in rows]
            if stopped_at is not None:
                stops.append(stopped_at[len(prefix) :])
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
    # A walk that stopped short covered its domain down to its stop only: this page holds
    # what lies above the highest stop, and the next page starts there.
    floor = max(stops, default=None)
    if floor is not None:
        found = [pair for pair in found if pair[0] >= floor]
    found.sort(key=lambda pair: pair[0], reverse=True)
    page = found[:limit]
    cursor = page[-1][0] if len(found) > limit else floor
    return [clean(doc) for _, doc in page], cursor


async def _walk(
    db: AsyncDatabase,
    field: str,
    bounds: dict[str, str],
    model_version: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` + 1 documents in `bounds`, newest first; with `model_version`, those of
    it among at most `_WALK_ROWS` entries walked. The last key walked when the walk stopped
    short of the range's end and of `limit` + 1 matches, else None."""
    coll = db[PREDICTIONS]
    if model_version is None:
        cursor = coll.find({field: bounds}).sort(field, DESCENDING).limit(limit + 1)
        return [doc async for doc in cursor], None
    wanted: list[Any] = []
    walked, bounds, stopped_at = 0, dict(bounds), None
    while len(wanted) <= limit:
        if walked >= _WALK_ROWS:
            stopped_at = bounds["$lt"]
            break
        step = min(4 * (limit + 1), _WALK_ROWS - walked)
        cursor = (
            coll.find({field: bounds}, {field: 1, "model_version": 1})
            .sort(field, DESCENDING)
            .limit(step)
        )
        entries = [doc async for doc in cursor]
        walked += len(entries)
        wanted += [e["_id"] for e in entries if e.get("model_version") == str(model_version)]
        if len(entries) < step:
            break
        bounds["$lt"] = entries[-1][field]
    docs = [doc async for doc in coll.find({"_id": {"$in": wanted[: limit + 1]}})]
    return sorted(docs, key=lambda d: d[field], reverse=True), stopped_at


async def find_predictions(
    db: AsyncDatabase,
    *,
    domain: str,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest `limit` archived predictions of a domain (`find_page`'s first page)."""
    page, _ = await find_page(
        db, domains=[domain], model_version=model_version, since=since, until=until, limit=limit
    )
    return page


async def find_archived_ids(db: AsyncDatabase, prediction_ids: list[str]) -> set[str]:
    """Which of these prediction ids are archived (under `_id`, as this version stores them)."""
    try:
        cursor = db[PREDICTIONS].find({"_id": {"$in": list(prediction_ids)}}, {"_id": 1})
        return {str(doc["_id"]) async for doc in cursor}
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc


async def set_explanations(db: AsyncDatabase, explained: dict[str, dict[str, Any]]) -> int:
    """Add each prediction's explanation to its archived record (by `_id`, one round trip);
    how many records were there to take it (a spooled one is not yet)."""
    if not explained:
        return 0
    updates = [
        UpdateOne({"_id": pid}, {"$set": {"explanation": explanation}})
        for pid, explanation in explained.items()
    ]
    try:
        result = await db[PREDICTIONS].bulk_write(updates, ordered=False)
    except PyMongoError as exc:
        raise StoreError(f"cannot write explanations: {exc}") from exc
    return int(result.matched_count)


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
    """The last `limit` archived cycles of a unit, oldest first (a range on `cycle_key`)."""
    query = {"cycle_key": keys.prefix_range(keys.asset_prefix(domain, str(unit_id)))}
    try:
        cursor = (
            db[PREDICTIONS]
            .find(query, {"cycle": 1, "input": 1, "_id": 0})
            .sort("cycle_key", DESCENDING)
            .limit(int(limit))
        )
        rows = [doc async for doc in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the unit's history: {exc}") from exc
    return rows[::-1]


# --- repairing a unit (admin; audited by the caller, archive/audit.py) --------------------------
def _unit_cycles(domain: str, unit_id: str, from_cycle: int | None = None) -> dict[str, Any]:
    """A unit's cycles (from `from_cycle` on), as a range on `cycle_key`."""
    prefix = keys.asset_prefix(str(domain), str(unit_id))
    bounds = keys.prefix_range(prefix)
    if from_cycle is not None:
        bounds = {
            "$gte": keys.cycle_key(domain, unit_id, max(int(from_cycle), 0)),
            "$lt": bounds["$lt"],
        }
    return {"cycle_key": bounds}


_LAST = {"projection": {"cycle": 1, "_id": 0}, "sort": [("cycle_key", DESCENDING)]}


async def purge_unit_cycles(
    db: AsyncDatabase, domain: str, unit_id: str, from_cycle: int
) -> dict[str, Any]:
    """Delete a unit's archived cycles >= `from_cycle`: `deleted` and the unit's `last_cycle`
    left (None: none). The caller resets the unit's serving state (archive/unit_state.py)."""
    coll, query = db[PREDICTIONS], _unit_cycles(domain, unit_id, from_cycle)
    try:
        removed = [doc async for doc in coll.find(query, {"input": 0})]
        result = await coll.delete_many(query)
        last = await coll.find_one(_unit_cycles(domain, unit_id), **_LAST)
    except PyMongoError as exc:
        raise StoreError(f"cannot purge the cycles of unit {unit_id!r}: {exc}") from exc
    await counters.count_removed(db, removed)
    return {"deleted": int(result.deleted_count), "last_cycle": (last or {}).get("cycle")}


def purge_unit_cycles_sync(
    db: Database, domain: str, unit_id: str, from_cycle: int
) -> dict[str, Any]:
    """Sync twin of `purge_unit_cycles` (the CLI), with the deleted documents (without their
    input) under `removed`, for the caller to uncount (`counters.count_removed`)."""
    coll, query = db[PREDICTIONS], _unit_cycles(domain, unit_id, from_cycle)
    try:
        removed = list(coll.find(query, {"input": 0}))
        result = coll.delete_many(query)
        last = coll.find_one(_unit_cycles(domain, unit_id), **_LAST)
    except PyMongoError as exc:
        raise StoreError(f"cannot purge the cycles of unit {unit_id!r}: {exc}") from exc
    return {
        "deleted": int(result.deleted_count),
        "last_cycle": (last or {}).get("cycle"),
        "removed": removed,
    }


# --- sync (pipeline steps, monitoring runs, CLI) ------------------------------------------------
def count_predictions(db: Database, domain: str | None = None) -> int:
    """Archived predictions (of a domain), counted by an aggregate (fast on the embedded store)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"domain": str(domain)} if domain is not None else {}},
        {"$count": "n"},
    ]
    try:
        rows = list(db[PREDICTIONS].aggregate(pipeline))
    except PyMongoError as exc:
        raise StoreError(f"cannot count the archive: {exc}") from exc
    return int(rows[0]["n"]) if rows else 0


#: the fields a monitoring run reads of each prediction (`input` only when asked: a vibration
#: window is 8 kB)
_MONITORED = ("prediction_id", "asset_id", "cycle", "output", "model_version", "label", "shadow")


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
    if labelled:  # newest labels first, labelled by `end`; their creation from `start`
        query: dict[str, Any] = (
            labelled_filter(domain, end)
            if end is not None
            else {"label_key": keys.prefix_range(keys.domain_prefix(domain))}
        )
        field = "label_key"
    else:
        query = {"domain_time_key": keys.time_range(keys.domain_prefix(domain), start, end)}
        field = "domain_time_key"
    fields = [*_MONITORED, "created_at", *(["input"] if with_input else [])]
    try:
        cursor = (
            db[PREDICTIONS]
            .find(query, dict.fromkeys(fields, 1))
            .sort(field, DESCENDING)
            .limit(int(limit))
        )
        rows = list(cursor)
        if labelled and start is not None:
            rows = [r for r in rows if in_window(r, utc_ms(start), None)]
        return rows
    except PyMongoError as exc:
        raise StoreError(f"cannot read archived {domain} predictions: {exc}") from exc
