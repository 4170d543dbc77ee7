"""An archive written before the sort keys (archive/upgrade.py), on the real store: the first
`ensure_indexes_sync` gives its predictions their keys, drops the indexes no read uses, rebuilds
the counters, once; afterwards every key-range read finds the earlier predictions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from machine_health.archive import client as archive_client
from machine_health.archive import counters, labels, predictions, upgrade
from machine_health.config import Settings

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


def _earlier(i: int, **extra: object) -> dict:
    """A turbofan prediction as an earlier version stored it: ObjectId `_id`, no sort keys."""
    return {
        "prediction_id": f"old-{i:03d}", "domain": "turbofan", "asset_id": "u1", "cycle": i + 1,
        "input": {"cycle": i + 1}, "output": {"rul": 80.0 - i}, "model_version": "1",
        "created_at": T0 + timedelta(minutes=i), "label": None, "labelled_at": None, **extra,
    }  # fmt: skip


def test_an_earlier_archive_is_upgraded_once_and_read_by_its_keys(
    settings: Settings, db: Database
) -> None:
    coll = db[archive_client.PREDICTIONS]
    coll.create_indexes([
        IndexModel([("domain", ASCENDING), ("created_at", DESCENDING)], name="domain_time"),
        IndexModel([("labelled_at", ASCENDING)], name="labelled_at"),
    ])  # fmt: skip
    labelled_at = T0 + timedelta(hours=2)
    docs = [_earlier(i) for i in range(5)]
    docs[1] |= {"label": 40.0, "labelled_at": labelled_at}
    # an early version `$set` label times through the embedded store, which kept them as text
    docs[2] |= {"label": 39.0, "labelled_at": str(labelled_at.replace(tzinfo=None))}
    coll.insert_many(docs)

    archive_client.ensure_indexes_sync(db)

    stored = {d["prediction_id"]: d for d in coll.find({})}
    assert all("domain_time_key" in d and "cycle_key" in d for d in stored.values())
    assert {p for p, d in stored.items() if "label_key" in d} == {"old-001", "old-002"}
    keys_of = {tuple(tuple(k) for k in i["key"]) for i in coll.index_information().values()}
    assert (("labelled_at", 1),) not in keys_of
    assert (("domain", 1), ("created_at", -1)) not in keys_of
    assert db[upgrade.META].find_one({"_id": upgrade.SORT_KEYS})["upgraded"] == 5
    assert db[counters.COUNTERS].find_one({"_id": "turbofan/all"})["n"] == 5

    async def reads() -> tuple[list, list]:
        client = archive_client.async_client(settings)
        try:
            adb = client[settings.mongodb_db]
            history = await predictions.unit_history(adb, "u1", 3, domain="turbofan")
            page, _ = await predictions.find_page(adb, domains=["turbofan"], limit=10)
            return history, page
        finally:
            await client.close()

    history, page = asyncio.run(reads())
    assert [h["cycle"] for h in history] == [3, 4, 5]
    assert [p["prediction_id"] for p in page] == [f"old-{i:03d}" for i in range(4, -1, -1)]
    until = labelled_at + timedelta(seconds=1)
    assert labels.count_labelled(db, "turbofan", until) == 2

    # Once: a prediction without keys written afterwards (by an earlier replica) is left alone.
    coll.insert_one(_earlier(9))
    archive_client.ensure_indexes_sync(db)
    assert "domain_time_key" not in coll.find_one({"prediction_id": "old-009"})
