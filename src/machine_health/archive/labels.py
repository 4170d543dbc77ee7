"""Ground truth of archived predictions: attaching labels (API), and reading the labelled rows
a retraining run consumes (pipeline steps).

A row is labelled when `label` is set and `labelled_at` (the store's time of the label) is at or
before the run's interval end: `labelled_filter` is THE definition, shared by the check step's
count and the extract step's snapshot (and recorded in the snapshot's manifest).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.client import PREDICTIONS
from machine_health.errors import InputError, NotFound, StoreError

# Label times are set by the store (`$currentDate`), never `$set` from Python: the embedded
# store (nx-27017 0.8.1) writes a top-level datetime given to `$set` as a STRING, which the
# pipeline's `labelled_at` range queries and Parquet snapshot cannot use
# (tests/integration/test_store_contract.py pins both behaviours). One clock for every replica.
_LABELLED_NOW = {"$currentDate": {"labelled_at": True}}


# --- attaching labels (async, API) --------------------------------------------------------------
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
    domain: str,
    source: str = "failure",
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


# --- reading labelled rows (sync, pipeline steps) -----------------------------------------------
def labelled_filter(
    domain: str, until: datetime, *, since: datetime | None = None
) -> dict[str, Any]:
    """THE query of a domain's rows labelled at or before `until` (and after `since`, if given;
    see archive/records.py for the fields)."""
    labelled_at: dict[str, datetime] = {"$lte": until}
    if since is not None:
        labelled_at["$gt"] = since
    return {"domain": str(domain), "label": {"$ne": None}, "labelled_at": labelled_at}


def count_labelled(
    db: Database, domain: str, until: datetime, *, since: datetime | None = None
) -> int:
    """Rows of `labelled_filter(domain, until, since=since)`, counted off a cursor of ids.

    Neither shortcut works here on the embedded store (nx-27017 0.8.1): `count_documents` is
    very slow, and an aggregate `$match` with a datetime range counts 0 where `find` matches.
    """
    query = labelled_filter(domain, until, since=since)
    try:
        return sum(1 for _ in db[PREDICTIONS].find(query, {"_id": 1}).batch_size(10_000))
    except PyMongoError as exc:
        raise StoreError(f"cannot count labelled {domain} predictions: {exc}") from exc


def stream_labelled(
    db: Database, domain: str, until: datetime, *, batch_size: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every row of `labelled_filter(domain, until)` without its model output, in creation
    order (ties by id): the same interval always streams the same rows in the same order."""
    cursor = (
        db[PREDICTIONS]
        .find(labelled_filter(domain, until), {"_id": 0, "output": 0})
        .sort([("created_at", ASCENDING), ("prediction_id", ASCENDING)])
        .batch_size(int(batch_size))
    )
    try:
        yield from cursor
    except PyMongoError as exc:
        raise StoreError(f"cannot read labelled {domain} predictions: {exc}") from exc
