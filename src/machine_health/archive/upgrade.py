"""One-off upgrade of an archive written by an earlier version: sort keys on old predictions,
the indexes no read uses any more dropped, and the pre-aggregated counters
(archive/counters.py) rebuilt.

Every read ranges on the sort keys of archive/keys.py; predictions archived before they existed
get them here, once per archive (a marker in `archive_meta` records it). It reads the whole
collection, so it runs where indexes are ensured (`client.ensure_indexes_sync`: every pipeline
step, CLI command and API start) and costs one `_id` lookup once it is done.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from machine_health.archive import counters, keys

logger = logging.getLogger(__name__)

META = "archive_meta"
SORT_KEYS = "sort_keys_v1"
_BATCH = 2000
_FIELDS = ("prediction_id", "domain", "asset_id", "cycle", "created_at", "label", "labelled_at")


def _time(value: Any) -> datetime | None:
    """A stored time; label times written through `$set` by early versions are text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _keys_of(doc: dict[str, Any]) -> dict[str, str] | None:
    created = _time(doc.get("created_at"))
    if created is None or not doc.get("prediction_id") or not doc.get("domain"):
        return None  # not a prediction this version wrote: left for validation to report
    return keys.record_keys(
        {**doc, "created_at": created, "asset_id": doc.get("asset_id", ""),
         "labelled_at": _time(doc.get("labelled_at"))}
    )  # fmt: skip


#: indexes of earlier versions that no read uses any more (each costs every insert)
RETIRED_INDEXES = (
    [("domain", 1), ("created_at", -1)],
    [("domain", 1), ("asset_id", 1)],
    [("model_version", 1)],
    [("labelled_at", 1)],
)


def _drop_retired_indexes(db: Database, collection: str) -> None:
    """Drop them by the name the store reports (nx-27017 names indexes its own way)."""
    retired = [list(map(tuple, spec)) for spec in RETIRED_INDEXES]
    for name, info in db[collection].index_information().items():
        if [tuple(k) for k in info["key"]] in retired:
            db[collection].drop_index(name)
            logger.info("archive upgraded: index %s dropped (no read uses it)", name)


def add_sort_keys(db: Database, collection: str) -> int:
    """Give every prediction of `collection` without sort keys its keys (once per archive);
    the number upgraded."""
    if db[META].find_one({"_id": SORT_KEYS}) is not None:
        return 0
    coll, upgraded, updates = db[collection], 0, []
    projection = dict.fromkeys((*_FIELDS, "domain_time_key"), 1)
    for doc in coll.find({}, projection).batch_size(_BATCH):
        found = None if "domain_time_key" in doc else _keys_of(doc)
        if found:
            updates.append(UpdateOne({"_id": doc["_id"]}, {"$set": found}))
        if len(updates) >= _BATCH:
            upgraded += coll.bulk_write(updates, ordered=False).modified_count
            updates = []
    if updates:
        upgraded += coll.bulk_write(updates, ordered=False).modified_count
    _drop_retired_indexes(db, collection)
    counters.rebuild(db)  # the pre-aggregated counts of an archive that had none
    db[META].update_one(
        {"_id": SORT_KEYS},
        {"$set": {"upgraded": upgraded}, "$currentDate": {"at": True}},
        upsert=True,
    )
    if upgraded:
        logger.info("archive upgraded: sort keys given to %d earlier predictions", upgraded)
    return upgraded
