"""Queries and updates of archived predictions: async for the API, sync for pipeline and CLI.

Filters are built here from typed arguments only; no caller passes a query document, an
operator or a field name, so a request can never inject one.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS, REPORTS
from machine_health.errors import InputError, NotFound, StoreError

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


def _query(
    *,
    domain: str | None = None,
    asset_id: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
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
# milliseconds. A bound on a whole second is exact on both, so `_query` widens a time window
# to whole seconds and the few records of a boundary second are sorted out here (`_in_window`).
def _utc_ms(moment: datetime | None) -> datetime | None:
    """A bound as BSON keeps it: UTC (a naive time is UTC, as pymongo reads it), whole ms."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _in_window(doc: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    created = doc.get("created_at")
    if not isinstance(created, datetime):
        return False
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return (since is None or created >= since) and (until is None or created < until)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    doc.pop("_id", None)
    return doc


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

    The store is asked for whole-second bounds (see `_query`). Newest first, the records it adds
    after a sub-second `until` come first: they are counted and skipped; those it adds before a
    sub-second `since` come last: they are dropped from the page, which then ends the listing.
    """
    since, until = _utc_ms(since), _utc_ms(until)
    others = {"domain": domain, "asset_id": asset_id, "model_version": model_version}
    query = _query(**others, since=since, until=until)
    try:
        extra = 0
        if until is not None and until.microsecond:
            start = until.replace(microsecond=0)
            if since is not None:
                start = max(start, since.replace(microsecond=0))
            second = db[PREDICTIONS].find(
                _query(**others, since=start, until=until), {"created_at": 1, "_id": 0}
            )
            extra = len([doc async for doc in second if not _in_window(doc, None, until)])
        cursor = (
            db[PREDICTIONS]
            .find(query)
            .sort([("created_at", DESCENDING), ("prediction_id", ASCENDING)])
            .skip(int(skip) + extra)
            .limit(int(limit))
        )
        return [_clean(doc) async for doc in cursor if _in_window(doc, since, until)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc


async def get_prediction(db: AsyncDatabase, prediction_id: str) -> dict[str, Any]:
    doc = await find_prediction(db, prediction_id)
    if doc is None:
        raise NotFound(f"no archived prediction {prediction_id!r}")
    return doc


async def find_prediction(db: AsyncDatabase, prediction_id: str) -> dict[str, Any] | None:
    try:
        doc = await db[PREDICTIONS].find_one({"prediction_id": str(prediction_id)})
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
    return _clean(doc) if doc else None


# Label times are set by the store (`$currentDate`), never `$set` from Python: the embedded
# store (nx-27017 0.8.1) writes a top-level datetime given to `$set` as a STRING, which the
# pipeline's `labelled_at` range queries and Parquet snapshot cannot use
# (tests/integration/test_store_contract.py pins both behaviours). One clock for every replica.
_LABELLED_NOW = {"$currentDate": {"labelled_at": True}}


async def set_label(
    db: AsyncDatabase,
    prediction_id: str,
    *,
    domain: str,
    label: str | float,
    source: str,
    labelled_by: str,
) -> dict[str, Any]:
    """Attach ground truth to one archived prediction of `domain`, with who gave it
    (`labelled_by`) and how (`source`: feedback, failure, import...); NotFound when absent."""
    try:
        doc = await db[PREDICTIONS].find_one_and_update(
            {"prediction_id": str(prediction_id), "domain": str(domain)},
            {
                "$set": {"label": label, "label_source": source, "labelled_by": labelled_by},
                **_LABELLED_NOW,
            },
            projection={"labelled_at": 1, "_id": 0},
            return_document=ReturnDocument.AFTER,
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot update the archive: {exc}") from exc
    if doc is None:
        raise NotFound(f"no archived {domain} prediction {prediction_id!r} (or not archived yet)")
    return {"prediction_id": prediction_id, "label": label, "labelled_at": doc["labelled_at"]}


async def backfill_failure(
    db: AsyncDatabase,
    unit_id: str,
    failure_cycle: int,
    *,
    labelled_by: str,
    source: str = "failure",
    domain: str = "turbofan",
    max_label: int | None = None,
) -> dict[str, Any]:
    """Label every archived cycle of a unit with its true RUL = failure_cycle - cycle, with who
    gave it (`labelled_by`) and how (`source`)."""
    coll = db[PREDICTIONS]
    query = {"domain": domain, "asset_id": str(unit_id)}
    try:
        docs = [d async for d in coll.find(query, {"prediction_id": 1, "cycle": 1, "_id": 0})]
        docs = [d for d in docs if d.get("cycle") is not None]
        if not docs:
            raise NotFound(f"no archived cycles for unit {unit_id!r}")
        latest = max(int(d["cycle"]) for d in docs)
        if latest > failure_cycle:
            raise InputError(
                f"failure_cycle {failure_cycle} is before archived cycle {latest} "
                f"of unit {unit_id!r}"
            )
        # `max_label`: the largest true RUL a retrain accepts; a farther failure would give
        # the unit's first cycles labels that fail every later retrain of the domain.
        first = min(int(d["cycle"]) for d in docs)
        if max_label is not None and failure_cycle - first > max_label:
            raise InputError(
                f"failure_cycle {failure_cycle} is more than {max_label} cycles after archived "
                f"cycle {first} of unit {unit_id!r} (MH_TURBOFAN_MAX_RUL_LABEL)"
            )
        updates = [
            UpdateOne(
                {"prediction_id": d["prediction_id"]},
                {
                    "$set": {
                        "label": float(failure_cycle - int(d["cycle"])),
                        "label_source": source,
                        "labelled_by": labelled_by,
                    },
                    **_LABELLED_NOW,
                },
            )
            for d in docs
        ]
        result = await coll.bulk_write(updates, ordered=False)
        last = await coll.find_one(
            {"prediction_id": docs[-1]["prediction_id"]}, {"labelled_at": 1, "_id": 0}
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot update the archive: {exc}") from exc
    return {
        "unit_id": str(unit_id),
        "failure_cycle": failure_cycle,
        "labelled": len(updates),
        "modified": result.modified_count,
        "labelled_at": (last or {}).get("labelled_at"),
    }


async def unit_history(
    db: AsyncDatabase, unit_id: str, limit: int, *, domain: str = "turbofan"
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


# --- repairing a unit (admin) ------------------------------------------------------------------
#: append-only record of administrative changes to the archive (who, what, when)
AUDIT = "audit"


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


def audit_entry(action: str, *, user: str, via: str, **details: Any) -> dict[str, Any]:
    """One audit document: what was done, by whom, through what (api, cli), when."""
    return {"action": action, "user": user, "via": via, "at": datetime.now(UTC), **details}


async def record_audit(db: AsyncDatabase, entry: dict[str, Any]) -> None:
    try:
        await db[AUDIT].insert_one(dict(entry))
    except PyMongoError as exc:
        raise StoreError(f"cannot record the audit entry: {exc}") from exc


def record_audit_sync(db: Database, entry: dict[str, Any]) -> None:
    try:
        db[AUDIT].insert_one(dict(entry))
    except PyMongoError as exc:
        raise StoreError(f"cannot record the audit entry: {exc}") from exc


# --- sync (pipeline steps, CLI) -------------------------------------------------------------
def iter_labelled(
    db: Database, domain: str, *, labelled_until: datetime, labelled_since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Labelled predictions of a domain, in creation order (what retraining extracts)."""
    window: dict[str, datetime] = {"$lte": labelled_until}
    if labelled_since is not None:
        window["$gt"] = labelled_since
    query = {"domain": str(domain), "label": {"$ne": None}, "labelled_at": window}
    try:
        for doc in db[PREDICTIONS].find(query).sort([("created_at", ASCENDING)]):
            yield _clean(doc)
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc


def count_predictions(db: Database, domain: str | None = None) -> int:
    """Archived predictions (of a domain), counted by an aggregate (fast on the embedded store)."""
    pipeline: list[dict[str, Any]] = [{"$match": _query(domain=domain)}, {"$count": "n"}]
    try:
        rows = list(db[PREDICTIONS].aggregate(pipeline))
    except PyMongoError as exc:
        raise StoreError(f"cannot count the archive: {exc}") from exc
    return int(rows[0]["n"]) if rows else 0


# --- aggregations of the inspection UI (GET /stats/..., /reports/..., /projection/...) ----------
# Inside the embedded store's subset: `$count`, `$group` on ONE key, `$bucket`, `$dateToString`
# (not `$dateTrunc`/`$min` of dates, which it returns as JSON text), no `$cond`. They count ALL
# time: the embedded store ignores a date range in an aggregate `$match` (`window_rows` serves
# time windows).
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


def _stats_match(domain: str, *, labelled: bool = False) -> dict[str, Any]:
    match = _query(domain=domain)
    if labelled:
        match["label"] = {"$ne": None}
    return match


async def count_archived(db: AsyncDatabase, domain: str, *, labelled: bool = False) -> int:
    """Archived predictions of a domain (only the labelled ones if asked)."""
    match = _stats_match(domain, labelled=labelled)
    rows = await _aggregate(db, [{"$match": match}, {"$count": "n"}])
    return int(rows[0]["n"]) if rows else 0


async def count_by_time(
    db: AsyncDatabase,
    domain: str,
    *,
    bucket: str = "hour",
) -> dict[str, int]:
    """Predictions per UTC hour or day (ISO start of the bucket -> count), in time order."""
    if bucket not in _BUCKET_FORMATS:
        raise InputError(f"bucket: one of {', '.join(_BUCKET_FORMATS)}")
    key = {"$dateToString": {"date": "$created_at", "format": _BUCKET_FORMATS[bucket]}}
    pipeline = [
        {"$match": _stats_match(domain)},
        {"$group": {"_id": key, "n": {"$sum": 1}}},
    ]
    rows = await _aggregate(db, pipeline)
    return {str(r["_id"]): int(r["n"]) for r in sorted(rows, key=lambda r: str(r["_id"]))}


async def count_by(
    db: AsyncDatabase,
    domain: str,
    key: str,
) -> dict[str, int]:
    """Predictions per value of one whitelisted field (`GROUP_KEYS`); None as "none"."""
    if key not in GROUP_KEYS:
        raise InputError(f"group key: one of {', '.join(GROUP_KEYS)}")
    pipeline = [
        {"$match": _stats_match(domain)},
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
    db: AsyncDatabase,
    edges: list[float],
    *,
    domain: str = "turbofan",
) -> list[dict[str, Any]]:
    """Predicted RUL counts per `[edges[i], edges[i+1])`; values beyond the edges as "other"."""
    pipeline = [
        {"$match": _stats_match(domain)},
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


async def latest_reports(
    db: AsyncDatabase, kind: str, *, domain: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Monitoring reports of one kind (and domain), newest first."""
    query: dict[str, Any] = {"kind": str(kind)}
    if domain is not None:
        query["domain"] = str(domain)
    try:
        cursor = db[REPORTS].find(query).sort([("created_at", DESCENDING)]).limit(int(limit))
        return [_clean(doc) async for doc in cursor]
    except PyMongoError as exc:
        raise StoreError(f"cannot read {kind} reports: {exc}") from exc


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
    since, until = _utc_ms(since), _utc_ms(until)
    try:
        cursor = (
            db[PREDICTIONS]
            .find(_query(domain=domain, since=since, until=until), {**fields, "_id": 0})
            .sort([("created_at", DESCENDING)])
            .limit(int(limit))
        )
        return [doc async for doc in cursor if _in_window(doc, since, until)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the archive: {exc}") from exc
