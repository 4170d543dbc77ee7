"""Ground truth of archived predictions: attaching labels (API), and reading the labelled rows
a retraining run consumes (pipeline steps).

A row is labelled at the time in its `label_key` (archive/keys.py: the labelling replica's clock,
set with every label and changed by a relabel); `labelled_at` is the store's time of the same
write, for people. A run takes the rows labelled at or before its interval end:
`labelled_filter` is THE definition, shared by the check step's count and the extract step's
snapshot (and recorded in the snapshot's manifest). Both are ranges on one indexed key, so
their cost follows the rows they return, not the archive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive import counters, keys
from machine_health.archive.client import PREDICTIONS
from machine_health.errors import InputError, NotFound, StoreError

logger = logging.getLogger(__name__)

#: a unit's recorded failure, `_id` "<domain>/<asset_id>/" (archive/keys.py `asset_prefix`)
FAILURES = "failures"

# `labelled_at` is set by the store (`$currentDate`), never `$set` from Python: the embedded
# store (nx-27017 0.8.1) writes a top-level datetime given to `$set` as a STRING, which the
# Parquet snapshot cannot use (tests/integration/test_store_contract.py pins it). No read
# ranges on it (`label_key` serves those), so it has no index.
_LABELLED_NOW = {"$currentDate": {"labelled_at": True}}


# --- attaching labels (async, API) --------------------------------------------------------------
# Every write below is by `_id`: the embedded store serves an update by `_id` in ~1 ms and
# scans the collection for any other filter (0.4 s per update at 200 k documents, measured).


def _label_fields(
    domain: str, prediction_id: str, label: str | float, source: str, labelled_by: str, ms: int
) -> dict[str, Any]:
    return {
        "$set": {
            "label": label,
            "label_source": source,
            "labelled_by": labelled_by,
            "label_key": keys.label_key(domain, ms, prediction_id),
        },
        **_LABELLED_NOW,
    }


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
    coll = db[PREDICTIONS]
    try:
        found = await coll.find_one(
            {"prediction_id": str(prediction_id), "domain": str(domain)},
            {"_id": 1, "label": 1, "created_at": 1},
        )
        if found is None:
            raise NotFound(
                f"no archived {domain} prediction {prediction_id!r} (or not archived yet)"
            )
        doc = await coll.find_one_and_update(
            {"_id": found["_id"]},
            _label_fields(domain, prediction_id, label, source, labelled_by, _now_ms()),
            projection={"labelled_at": 1, "_id": 0},
            return_document=ReturnDocument.AFTER,
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot update the archive: {exc}") from exc
    if doc is None:  # purged between the two calls
        raise NotFound(f"no archived {domain} prediction {prediction_id!r}")
    await counters.count_labels(db, domain, [(found.get("created_at"), found.get("label"), label)])
    return {"prediction_id": prediction_id, "label": label, "labelled_at": doc["labelled_at"]}


async def unit_cycles(db: AsyncDatabase, domain: str, unit_id: str) -> list[dict[str, Any]]:
    """`_id`, prediction id, cycle, label and creation time of every archived cycle of a unit,
    in cycle order (a range on `cycle_key`: proportional to the unit's cycles, not the archive)."""
    fields = {"_id": 1, "prediction_id": 1, "cycle": 1, "label": 1, "created_at": 1}
    query = {"cycle_key": keys.prefix_range(keys.asset_prefix(domain, str(unit_id)))}
    try:
        return [d async for d in db[PREDICTIONS].find(query, fields).sort("cycle_key", ASCENDING)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read the cycles of unit {unit_id!r}: {exc}") from exc


async def backfill_failure(
    db: AsyncDatabase,
    unit_id: str,
    failure_cycle: int,
    *,
    labelled_by: str,
    domain: str,
    source: str = "failure",
    max_label: int | None = None,
) -> dict[str, Any]:
    """Label every archived cycle of a unit with its true RUL = failure_cycle - cycle, with who
    gave it (`labelled_by`) and how (`source`), and keep the failure (`FAILURES`, by `_id`) so
    cycles archived later from a replica's spool are labelled when they arrive
    (`label_replayed`)."""
    docs = await unit_cycles(db, domain, unit_id)
    if not docs:
        raise NotFound(f"no archived cycles for unit {unit_id!r}")
    first, latest = int(docs[0]["cycle"]), int(docs[-1]["cycle"])
    if latest > failure_cycle:
        raise InputError(
            f"failure_cycle {failure_cycle} is before archived cycle {latest} of unit {unit_id!r}"
        )
    # `max_label`: the largest true RUL a retrain accepts; a farther failure would give the
    # unit's first cycles labels that fail every later retrain of the domain.
    if max_label is not None and failure_cycle - first > max_label:
        raise InputError(
            f"failure_cycle {failure_cycle} is more than {max_label} cycles after archived "
            f"cycle {first} of unit {unit_id!r} (MH_TURBOFAN_MAX_RUL_LABEL)"
        )
    failure = {
        "domain": str(domain),
        "asset_id": str(unit_id),
        "failure_cycle": int(failure_cycle),
        "labelled_by": labelled_by,
        "source": source,
    }
    try:
        await db[FAILURES].update_one(
            {"_id": keys.asset_prefix(domain, str(unit_id))},
            {"$set": failure, "$currentDate": {"at": True}},
            upsert=True,
        )
        result = await _label_cycles(db, docs, failure)
        last = await db[PREDICTIONS].find_one({"_id": docs[-1]["_id"]}, {"labelled_at": 1})
    except PyMongoError as exc:
        raise StoreError(f"cannot update the archive: {exc}") from exc
    return {
        "unit_id": str(unit_id),
        "failure_cycle": failure_cycle,
        "labelled": len(docs),
        "modified": result,
        "labelled_at": (last or {}).get("labelled_at"),
    }


async def _label_cycles(
    db: AsyncDatabase, docs: list[dict[str, Any]], failure: dict[str, Any]
) -> int:
    """Give each cycle of `docs` (`_id`, prediction_id, cycle...) its true RUL under `failure`;
    the number modified."""
    domain, ms, end = failure["domain"], _now_ms(), int(failure["failure_cycle"])

    def rul(doc: dict[str, Any]) -> float:
        return float(end - int(doc["cycle"]))

    source, by = failure["source"], failure["labelled_by"]
    updates = [
        UpdateOne(
            {"_id": d["_id"]},
            _label_fields(domain, str(d["prediction_id"]), rul(d), source, by, ms),
        )
        for d in docs
    ]
    result = await db[PREDICTIONS].bulk_write(updates, ordered=False)
    changes = [(d.get("created_at"), d.get("label"), rul(d)) for d in docs]
    await counters.count_labels(db, domain, changes)
    return int(result.modified_count)


async def label_replayed(db: AsyncDatabase, records: Iterable[dict[str, Any]]) -> int:
    """Label replayed (spooled) cycles of units whose failure was recorded meanwhile: a
    failure posted while a replica's spool held some of the unit's cycles labelled only the
    cycles stored then. The number labelled."""
    per_unit: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        whole = record.get("asset_id") is not None and record.get("_id") is not None
        if whole and isinstance(record.get("cycle"), int) and record.get("label") is None:
            unit = keys.asset_prefix(str(record["domain"]), str(record["asset_id"]))
            per_unit.setdefault(unit, []).append(record)
    labelled = 0
    for unit, docs in per_unit.items():
        try:
            failure = await db[FAILURES].find_one({"_id": unit})
            if failure is None:
                continue
            fits = [d for d in docs if int(d["cycle"]) <= int(failure["failure_cycle"])]
            if fits:
                await _label_cycles(db, fits, failure)
                labelled += len(fits)
        except PyMongoError as exc:
            logger.warning("cannot label replayed cycles of %s: %s", unit, exc)
    return labelled


def _now_ms() -> int:
    return keys.epoch_ms(datetime.now(UTC))


# --- reading labelled rows (sync, pipeline steps) -----------------------------------------------
def labelled_filter(
    domain: str, until: datetime, *, since: datetime | None = None
) -> dict[str, Any]:
    """THE query of a domain's rows labelled at or before `until` (and after `since`, if
    given), by the label's key time (archive/keys.py): a range on one indexed field."""
    low = keys.label_key(domain, keys.epoch_ms(since), keys.END) if since else None
    high = keys.label_key(domain, keys.epoch_ms(until), keys.END)
    return {"label_key": {"$gt": low or keys.domain_prefix(domain), "$lt": high}}


def count_labelled(
    db: Database, domain: str, until: datetime, *, since: datetime | None = None
) -> int:
    """Rows of `labelled_filter(domain, until, since=since)`, counted off a cursor of ids
    (`count_documents` is very slow on the embedded store)."""
    query = labelled_filter(domain, until, since=since)
    try:
        return sum(1 for _ in db[PREDICTIONS].find(query, {"_id": 1}).batch_size(10_000))
    except PyMongoError as exc:
        raise StoreError(f"cannot count labelled {domain} predictions: {exc}") from exc


def stream_labelled_range(
    db: Database,
    domain: str,
    until: datetime,
    *,
    since: datetime | None = None,
    batch_size: int = 2000,
) -> Iterator[dict[str, Any]]:
    """Rows of `labelled_filter(domain, until, since=since)` without their model output, in
    label-key order."""
    cursor = (
        db[PREDICTIONS]
        .find(labelled_filter(domain, until, since=since), {"_id": 0, "output": 0})
        .sort("label_key", ASCENDING)
        .batch_size(int(batch_size))
    )
    try:
        yield from cursor
    except PyMongoError as exc:
        raise StoreError(f"cannot read labelled {domain} predictions: {exc}") from exc
