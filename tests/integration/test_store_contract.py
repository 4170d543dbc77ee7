"""Contract of the document store: the behaviours the archive relies on, pinned.

They run against whatever the `store_uri` fixture names (the embedded nx-27017 by default,
MH_TEST_MONGODB_URI for a real MongoDB), so the same code is known to work on both.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from machine_health.archive import client as archive_client
from machine_health.config import Settings


def test_indexes_are_created_idempotently(db: Database) -> None:
    archive_client.ensure_indexes_sync(db)
    archive_client.ensure_indexes_sync(db)  # a second replica starting must not fail
    info = db[archive_client.PREDICTIONS].index_information()
    unique = [v for v in info.values() if v.get("unique")]
    assert any(v["key"][0][0] == "prediction_id" for v in unique)


def test_unique_index_refuses_a_second_document(db: Database) -> None:
    archive_client.ensure_indexes_sync(db)
    coll = db[archive_client.PREDICTIONS]
    coll.insert_one({"prediction_id": "p-1", "domain": "vibration"})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"prediction_id": "p-1", "domain": "vibration"})
    assert coll.estimated_document_count() == 1


def test_unordered_insert_many_keeps_the_new_and_reports_the_duplicates(db: Database) -> None:
    """Spool replay relies on this: re-sending a batch only inserts what is missing."""
    archive_client.ensure_indexes_sync(db)
    coll = db[archive_client.PREDICTIONS]
    coll.insert_many([{"prediction_id": f"p-{i}"} for i in range(3)])
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"prediction_id": f"p-{i}"} for i in range(5)], ordered=False)
    assert info.value.details["nInserted"] == 2
    codes = {e["code"] for e in info.value.details["writeErrors"]}
    assert codes == {11000}
    ids = sorted(d["prediction_id"] for d in coll.find({}, {"prediction_id": 1, "_id": 0}))
    assert ids == [f"p-{i}" for i in range(5)]


def test_counts_without_count_documents(db: Database) -> None:
    coll = db["c"]
    coll.insert_many([{"domain": "turbofan" if i % 3 else "vibration", "i": i} for i in range(300)])
    assert coll.estimated_document_count() == 300
    counted = list(coll.aggregate([{"$match": {"domain": "vibration"}}, {"$count": "n"}]))
    assert counted == [{"n": 100}]
    grouped = {
        g["_id"]: g["n"] for g in coll.aggregate([{"$group": {"_id": "$domain", "n": {"$sum": 1}}}])
    }
    assert grouped == {"vibration": 100, "turbofan": 200}


def test_time_range_filter_sort_and_pagination(db: Database) -> None:
    coll = db["p"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    coll.insert_many(
        [
            {"i": i, "asset_id": f"a{i % 2}", "created_at": t0 + timedelta(minutes=i)}
            for i in range(20)
        ]
    )
    query = {
        "asset_id": "a0",
        "created_at": {"$gte": t0 + timedelta(minutes=4), "$lt": t0 + timedelta(minutes=16)},
    }
    page1 = list(coll.find(query).sort([("created_at", DESCENDING)]).skip(0).limit(3))
    page2 = list(coll.find(query).sort([("created_at", DESCENDING)]).skip(3).limit(3))
    assert [d["i"] for d in page1] == [14, 12, 10]
    assert [d["i"] for d in page2] == [8, 6, 4]
    assert page1[0]["created_at"] == t0 + timedelta(minutes=14)
    assert page1[0]["created_at"].tzinfo is not None


def test_in_and_sort_ascending_on_strings(db: Database) -> None:
    coll = db["s"]
    coll.insert_many([{"unit": u, "cycle": c} for u in ("u2", "u1", "u3") for c in (3, 1, 2)])
    docs = list(
        coll.find({"unit": {"$in": ["u1", "u2"]}}).sort([("unit", ASCENDING), ("cycle", ASCENDING)])
    )
    assert [(d["unit"], d["cycle"]) for d in docs] == [
        ("u1", 1), ("u1", 2), ("u1", 3), ("u2", 1), ("u2", 2), ("u2", 3),
    ]  # fmt: skip


def test_update_many_backfills_by_string_key(db: Database) -> None:
    """Turbofan failure back-fill: one update per unit on a string foreign key."""
    coll = db["t"]
    coll.insert_many(
        [{"unit": "u1", "cycle": c} for c in range(1, 6)] + [{"unit": "u2", "cycle": 1}]
    )
    result = coll.update_many({"unit": "u1", "cycle": {"$lte": 5}}, {"$set": {"label": 1.0}})
    assert result.modified_count == 5
    assert [d.get("label") for d in coll.find({"unit": "u2"})] == [None]


def test_label_times_from_current_date_are_dates_in_range_queries(db: Database) -> None:
    """Labels are timestamped by the store with `$currentDate` (single and bulk updates): a BSON
    date that `labelled_at` range queries find. (nx-27017 0.8.1 stores a top-level datetime
    given to `$set` as a string, so the archive never writes a label time that way.)"""
    coll = db["labels"]
    coll.insert_many([{"k": i} for i in range(4)])
    before = datetime.now(UTC) - timedelta(seconds=2)
    one = coll.find_one_and_update(
        {"k": 0}, {"$set": {"label": "x"}, "$currentDate": {"at": True}},
        return_document=ReturnDocument.AFTER,
    )  # fmt: skip
    assert isinstance(one["at"], datetime)
    updates = [UpdateOne({"k": k}, {"$set": {"label": "y"}, "$currentDate": {"at": True}})
               for k in (1, 2)]  # fmt: skip
    assert coll.bulk_write(updates, ordered=False).modified_count == 2
    found = list(coll.find({"at": {"$gte": before, "$lte": datetime.now(UTC)}}).sort("k", 1))
    assert [d["k"] for d in found] == [0, 1, 2]
    assert all(isinstance(d["at"], datetime) for d in found)


def test_objectid_equality_on_id_and_binary_roundtrip(db: Database) -> None:
    coll = db["b"]
    samples = np.random.default_rng(0).standard_normal(2048).astype("<f4")
    oid = coll.insert_one({"samples": samples.tobytes(), "n": 2048}).inserted_id
    assert isinstance(oid, ObjectId)
    doc = coll.find_one({"_id": oid})
    assert doc is not None
    np.testing.assert_array_equal(np.frombuffer(doc["samples"], dtype="<f4"), samples)


def test_find_one_and_update_upsert_is_atomic_counter(db: Database) -> None:
    """Login throttling counts failures with an upserted $inc."""
    coll = db["f"]
    for _ in range(4):
        coll.find_one_and_update({"key": "user:bob"}, {"$inc": {"n": 1}}, upsert=True)
    assert coll.find_one({"key": "user:bob"})["n"] == 4


def test_async_client_reads_what_the_sync_client_wrote(settings: Settings, db: Database) -> None:
    db["x"].insert_many([{"k": i} for i in range(10)])

    async def read() -> list[int]:
        client = archive_client.async_client(settings)
        try:
            cursor = client[settings.mongodb_db]["x"].find({"k": {"$gte": 5}}).sort("k", 1)
            return [d["k"] async for d in cursor]
        finally:
            await client.close()

    assert asyncio.run(read()) == [5, 6, 7, 8, 9]


def test_sub_second_time_windows_are_exact_through_the_archive_queries(
    settings: Settings, db: Database
) -> None:
    """`GET /predictions?since=&until=` takes the answers' millisecond timestamps: the listing
    must be exact at that precision, page by page (nx-27017 compares dates at whole seconds)."""
    from machine_health.archive import predictions, stats
    from machine_health.archive.keys import record_keys

    archive_client.ensure_indexes_sync(db)
    t0 = datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    docs = [
        {"prediction_id": f"p{i:02d}", "domain": "vibration", "asset_id": f"a{i % 2}",
         "model_version": "1", "created_at": t0 + timedelta(milliseconds=97 * i)}
        for i in range(40)
    ]  # fmt: skip
    for doc in docs:  # the sort keys every archived prediction carries (window_rows ranges on one)
        doc.update(record_keys(doc))
    db[archive_client.PREDICTIONS].insert_many([dict(d) for d in docs])
    at = [d["created_at"] for d in docs]
    windows = [
        (at[3], at[25]),
        (at[0], at[39]),
        (at[11], at[12]),
        (at[5], None),
        (None, at[30]),
        (at[3] + timedelta(microseconds=400), at[25] + timedelta(microseconds=1)),
        (at[7].replace(tzinfo=None), None),  # naive: UTC, as pymongo reads it
        (t0.replace(microsecond=0) + timedelta(seconds=1), at[33]),  # a whole-second bound
    ]

    def ms(moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        return moment.replace(tzinfo=UTC, microsecond=moment.microsecond // 1000 * 1000)

    def expected(since: datetime | None, until: datetime | None, asset: str | None) -> list[str]:
        since, until = ms(since), ms(until)
        chosen = [
            d for d in docs
            if (since is None or d["created_at"] >= since)
            and (until is None or d["created_at"] < until)
            and (asset is None or d["asset_id"] == asset)
        ]  # fmt: skip
        return [d["prediction_id"] for d in reversed(chosen)]  # newest first

    async def listing(
        since: datetime | None, until: datetime | None, asset: str | None
    ) -> tuple[list[str], list[str]]:
        client = archive_client.async_client(settings)
        try:
            adb = client[settings.mongodb_db]
            pages: list[str] = []
            cursor: str | None = None
            for _ in range(12):  # keyset pages of 4 (archive/keys.py)
                page, cursor = await predictions.find_page(
                    adb, domains=["vibration"], asset_id=asset, since=since, until=until,
                    after=cursor, limit=4,
                )  # fmt: skip
                pages += [d["prediction_id"] for d in page]
                if cursor is None:
                    break
            rows = await stats.window_rows(adb, "vibration", since=since, until=until)
            return pages, sorted((r["created_at"] for r in rows), reverse=True)
        finally:
            await client.close()

    for since, until in windows:
        for asset in (None, "a1"):
            pages, times = asyncio.run(listing(since, until, asset))
            assert pages == expected(since, until, asset), (since, until, asset)
            created = {d["prediction_id"]: d["created_at"] for d in docs}
            assert times == [created[p] for p in expected(since, until, None)]


def test_unit_state_by_string_id_compare_and_set_of_an_array_of_dicts(db: Database) -> None:
    """The turbofan serving state (archive/unit_state.py): one document per unit under a string
    `_id`, a second insert of the same `_id` refused, and a compare-and-set `update_one` whose
    filter is `_id` plus `seq`, `$set`-ting an array of dicts that hold float arrays, which
    `find_one` by `_id` returns bit for bit."""
    coll = db["unit_state"]
    rng = np.random.default_rng(1)
    inputs = [
        {"unit_id": "u-1", "cycle": c, "settings": rng.standard_normal(3).tolist(),
         "sensors": (rng.standard_normal(21) * 1000).tolist()}
        for c in range(1, 101)
    ]  # fmt: skip
    coll.insert_one({"_id": "turbofan:u-1", "seq": 1, "inputs": inputs[:50], "complete": True})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": "turbofan:u-1", "seq": 1, "inputs": []})
    hit = coll.update_one(
        {"_id": "turbofan:u-1", "seq": 1},
        {"$set": {"seq": 2, "inputs": inputs, "last_cycle": 100, "last_prediction_id": None}},
    )
    assert (hit.matched_count, hit.modified_count) == (1, 1)
    stale = coll.update_one({"_id": "turbofan:u-1", "seq": 1}, {"$set": {"seq": 3, "inputs": []}})
    assert stale.matched_count == 0
    doc = coll.find_one({"_id": "turbofan:u-1"})
    assert doc is not None
    assert doc["seq"] == 2 and doc["last_cycle"] == 100 and doc["last_prediction_id"] is None
    assert doc["inputs"] == inputs  # floats exact, order kept


def test_unit_state_repository_round_trip(settings: Settings, db: Database) -> None:
    """`unit_state`'s own operations on the store: create once, compare-and-set, absorb."""
    from machine_health.archive import unit_state

    def cycle(c: int) -> dict[str, object]:
        return {"unit_id": "u-2", "cycle": c, "settings": [0.1, 0.2, 100.0], "sensors": [1.5] * 21}

    async def run() -> tuple[object, ...]:
        client = archive_client.async_client(settings)
        try:
            adb = client[settings.mongodb_db]
            first = unit_state.UnitState("turbofan", "u-2", (cycle(1), cycle(2)), capacity=3)
            created = await unit_state.create(adb, first)
            again = await unit_state.create(adb, first)
            assert created is not None
            moved = await unit_state.replace_if(
                adb, created.advanced(cycle(3), "p-3", 3), seq=created.seq
            )
            lost = await unit_state.replace_if(adb, created.advanced(cycle(3), "p-x", 3), seq=1)
            # a spool replay brings cycles 4 and 5 the state never saw: the last 3 are kept
            records = [{"domain": "turbofan", "asset_id": "u-2", "cycle": c, "input": cycle(c)}
                       for c in (4, 5)]  # fmt: skip
            changed = await unit_state.absorb(adb, [*records, {"domain": "vibration"}])
            unchanged = await unit_state.absorb(adb, records)
            return (
                created,
                again,
                moved,
                lost,
                changed,
                unchanged,
                await unit_state.read(adb, "turbofan", "u-2"),
            )
        finally:
            await client.close()

    _, again, moved, lost, changed, unchanged, final = asyncio.run(run())
    assert again is None and lost is None
    assert moved is not None and moved.seq == 2 and moved.last_prediction_id == "p-3"
    assert (changed, unchanged) == (1, 0)
    assert final is not None and final.seq == 3
    assert final.cycles == (3, 4, 5) and final.last_cycle == 5 and not final.complete
    assert db["unit_state"].find_one({"_id": "turbofan:u-2"})["last_cycle"] == 5


def test_writes_with_write_concern_majority_and_journal_are_acknowledged(
    settings: Settings, db: Database
) -> None:
    """Production writes use w="majority", j=true (MH_MONGODB_WRITE_CONCERN_W, MH_MONGODB_JOURNAL):
    the store accepts that write concern from both clients and acknowledges the write, which is
    then readable. (nx-27017 accepts any w and j and acknowledges once its SQLite commit is
    done; it has no replica set, so "majority" means this one server, as on a standalone mongod.)
    """
    from pymongo import WriteConcern

    assert settings.mongodb_write_concern_w == "majority" and settings.mongodb_journal is True
    sync = archive_client.sync_client(settings)
    try:
        assert sync.write_concern.document == {"w": "majority", "j": True, "wtimeout": 10_000}
        coll = sync[settings.mongodb_db]["wc"]
        assert coll.insert_one({"k": "sync"}).acknowledged
        bulk = coll.insert_many([{"k": f"b{i}"} for i in range(3)], ordered=False)
        assert bulk.acknowledged and len(bulk.inserted_ids) == 3
        explicit = coll.with_options(write_concern=WriteConcern(w="majority", j=True, wtimeout=500))
        assert explicit.update_one({"k": "sync"}, {"$set": {"v": 1}}).modified_count == 1
    finally:
        sync.close()

    async def async_write() -> bool:
        client = archive_client.async_client(settings)
        try:
            assert client.write_concern.document["w"] == "majority"
            result = await client[settings.mongodb_db]["wc"].insert_one({"k": "async"})
            return result.acknowledged
        finally:
            await client.close()

    assert asyncio.run(async_write())
    assert sorted(d["k"] for d in db["wc"].find({}, {"_id": 0, "k": 1})) == [
        "async", "b0", "b1", "b2", "sync",
    ]  # fmt: skip
