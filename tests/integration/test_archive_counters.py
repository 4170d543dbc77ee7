"""Pre-aggregated archive counters (archive/counters.py) on the real store: what the all-time
overview reads from them equals a direct count over the archived documents, through inserts
(duplicates not counted), labels (relabels not counted twice) and a rebuild from the archive.

The counting calls are made here as the archive writer and the label routes make them, so these
tests do not depend on that wiring.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from machine_health import telemetry
from machine_health.api.routes.stats import _rul_edges
from machine_health.archive import client as archive_client
from machine_health.archive import counters, predictions, stats
from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings
from machine_health.errors import InputError

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 22, 59, 58, 123456, tzinfo=UTC)  # hours and a day boundary follow
EDGES = _rul_edges(125)
CLASSES = ("normal", "inner_race", "outer_race", "ball")


def _run(settings: Settings, body: Callable[[AsyncDatabase], Awaitable[T]]) -> T:
    async def main() -> T:
        client = archive_client.async_client(settings)
        try:
            return await body(client[settings.mongodb_db])
        finally:
            await client.close()

    return asyncio.run(main())


def _record(i: int, domain: str, asset: str, output: dict[str, Any], **extra: Any) -> dict:
    return PredictionRecord(
        prediction_id=f"{domain[:3]}-{i:04d}", domain=domain, asset_id=asset, input={},
        output=output, model_name="m", model_version=extra.pop("model_version", "1"),
        user="operator", request_id=f"r{i}", latency_ms=1.0,
        created_at=T0 + timedelta(minutes=17 * i, microseconds=i), **extra,
    ).to_document()  # fmt: skip


def _vibration(i: int, **extra: Any) -> dict:
    output = {"anomaly_score": i / 7, "is_anomaly": i % 3 == 0, "threshold": 1.0,
              "fault_class": CLASSES[i % 4], "probabilities": {}}  # fmt: skip
    asset = ("motor.1", "motor%2", "bay:3", "m-4")[i % 4]  # "." and "%" in asset ids
    return _record(i, "vibration", asset, output, model_version=str(1 + i % 2), **extra)


def _turbofan(i: int, **extra: Any) -> dict:
    rul = (0.0, 9.999, 10.0, 54.5, 119.99, 120.0, 130.0, 400.0)[i % 8] + i // 8
    return _record(i, "turbofan", f"unit.{i % 3}", {"rul": rul}, cycle=i + 1, **extra)


def _insert(db: Database, docs: list[dict]) -> list[dict]:
    """Insert like the writer does (one unordered insert_many); the documents really inserted."""
    try:
        db[archive_client.PREDICTIONS].insert_many([dict(d) for d in docs], ordered=False)
    except BulkWriteError as exc:
        errors = exc.details["writeErrors"]
        if {e["code"] for e in errors} != {11000}:
            raise
        refused = {e["index"] for e in errors}
        return [d for i, d in enumerate(docs) if i not in refused]
    return docs


def _set_labels(db: Database, domain: str, labels: dict[str, Any]) -> list[tuple]:
    """Label like the routes do; the (created_at, old, new) changes `count_labels` takes."""
    changes = []
    for pid, label in labels.items():
        before = db[archive_client.PREDICTIONS].find_one_and_update(
            {"prediction_id": pid, "domain": domain}, {"$set": {"label": label}}
        )
        changes.append((before["created_at"], before.get("label"), label))
    return changes


def _direct(db: Database, domain: str, bucket: str, edges: list[float] | None) -> dict:
    """The overview counted straight from the archived documents."""
    docs = list(db[archive_client.PREDICTIONS].find({"domain": domain}, {"input": 0}))
    fmt = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z"}[bucket]
    outputs = [d["output"] for d in docs]
    expected: dict[str, Any] = {
        "total": len(docs),
        "labelled": sum(d.get("label") is not None for d in docs),
        "assets": len({d["asset_id"] for d in docs}),
        "over_time": dict(sorted(Counter(d["created_at"].strftime(fmt) for d in docs).items())),
        "by_model_version": dict(sorted(Counter(d["model_version"] for d in docs).items())),
    }
    if domain == "vibration":
        expected["anomalies"] = sum(o["is_anomaly"] for o in outputs)
        expected["by_fault_class"] = dict(
            sorted(Counter(o["fault_class"] for o in outputs).items())
        )
    if edges is not None:
        rows = [
            {"low": lo, "high": hi, "n": sum(lo <= o["rul"] < hi for o in outputs)}
            for lo, hi in itertools.pairwise(edges)
        ]
        other = len(docs) - sum(r["n"] for r in rows)
        expected["rul_histogram"] = [*rows, {"low": None, "high": None, "n": other}]
    return expected


def _overview(settings: Settings, domain: str, bucket: str) -> dict:
    edges = EDGES if domain == "turbofan" else None
    return _run(
        settings,
        lambda adb: counters.overview(
            adb, domain, bucket=bucket, rul_edges=edges, anomalies=domain == "vibration"
        ),
    )


def _check(settings: Settings, db: Database) -> None:
    for domain in ("vibration", "turbofan"):
        for bucket in ("hour", "day"):
            edges = EDGES if domain == "turbofan" else None
            assert _overview(settings, domain, bucket) == _direct(db, domain, bucket, edges)


def _counter_docs(db: Database) -> list[dict]:
    rows = db[counters.COUNTERS].find({}).sort("_id", 1)
    return [{k: v for k, v in row.items() if v != 0} for row in rows]


def test_counters_equal_a_direct_count_through_inserts_labels_and_a_rebuild(
    settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)
    vib = [_vibration(i) for i in range(40)]
    tf = [_turbofan(i) for i in range(50)]
    imported = [_vibration(40, label="ball", label_source="import")]  # labelled on arrival
    first = vib[:25] + tf[:30] + imported
    second = vib[20:] + tf[25:]  # overlaps the first: duplicates, not counted again
    for batch in (first, second):
        inserted = _insert(db, batch)
        _run(settings, lambda adb, docs=inserted: counters.count_inserted(adb, docs))
    assert len(inserted) == len(second) - 10
    _check(settings, db)

    # feedback (one at a time), relabels, a label set again to the same value
    feedback = [
        ("vib-0001", "inner_race"), ("vib-0002", "ball"), ("vib-0001", "outer_race"),
        ("vib-0002", "ball"), ("vib-0040", "normal"), ("vib-0039", "normal"),
    ]  # fmt: skip
    for pid, label in feedback:
        changes = _set_labels(db, "vibration", {pid: label})
        _run(settings, lambda adb, c=changes: counters.count_labels(adb, "vibration", c))
    # failure back-fill (many at once, numeric), then the same unit back-filled again
    for failure in (200, 210):
        unit = {
            d["prediction_id"]: float(failure - d["cycle"]) for d in tf if d["asset_id"] == "unit.1"
        }
        changes = _set_labels(db, "turbofan", unit)
        _run(settings, lambda adb, c=changes: counters.count_labels(adb, "turbofan", c))
    _check(settings, db)
    vibration = _overview(settings, "vibration", "hour")
    assert vibration["labelled"] == 4 and vibration["assets"] == 4
    assert _overview(settings, "turbofan", "day")["labelled"] == len(unit)
    labels = Counter(
        d["label"] for d in db.predictions.find({"domain": "vibration", "label": {"$ne": None}})
    )
    stored = Counter()
    for row in db[counters.COUNTERS].find({"domain": "vibration"}):
        stored.update(
            {k.removeprefix("label_"): v for k, v in row.items() if k.startswith("label_")}
        )
    assert {k: v for k, v in stored.items() if v} == labels  # they follow relabels

    incremental = _counter_docs(db)
    db[counters.COUNTERS].insert_one({"_id": "vibration/2020-01-01T00", "domain": "vibration",
                                      "hour": "2020-01-01T00", "n": 7})  # fmt: skip
    db[counters.COUNTERS].update_one({"_id": incremental[0]["_id"]}, {"$inc": {"n": 5}})
    assert counters.rebuild(db) == len(vib) + len(tf) + 1
    assert _counter_docs(db) == incremental  # replaced, the stale hour removed
    assert counters.rebuild(db) == len(vib) + len(tf) + 1
    assert _counter_docs(db) == incremental  # idempotent
    db[counters.COUNTERS].delete_many({})
    assert counters.rebuild(db) == len(vib) + len(tf) + 1
    assert _counter_docs(db) == incremental  # from nothing (an archive older than counters)
    _check(settings, db)


def test_counter_fields_are_flat_with_dots_encoded(settings: Settings, db: Database) -> None:
    first, second = _vibration(1), {**_vibration(3), "asset_id": "motor.1"}  # the same hour
    assert first["asset_id"] == "motor%2"
    _run(settings, lambda adb: counters.count_inserted(adb, [first]))  # inserts the hour
    _run(settings, lambda adb: counters.count_inserted(adb, [second]))  # updates it
    row = db[counters.COUNTERS].find_one({"_id": f"vibration/{first['created_at']:%Y-%m-%dT%H}"})
    assert row is not None and row["n"] == 2 and row["hour"] == "2026-03-01T23"
    assert row["asset_motor%252"] == row["asset_motor%2E1"] == 1
    assert not any("." in key for key in row)
    overview = _overview(settings, "vibration", "hour")
    assert overview["assets"] == 2 and overview["by_model_version"] == {"2": 2}


def test_rul_bins_sum_exactly_to_the_overview_edges(settings: Settings, db: Database) -> None:
    for cap in (1, 10, 95, 125, 130, 361):
        edges = _rul_edges(cap)
        assert all(e == math.floor(e / counters.RUL_BIN) * counters.RUL_BIN for e in edges)
    with pytest.raises(InputError, match="rul_edges"):
        _run(settings, lambda adb: counters.overview(adb, "turbofan", rul_edges=[0.0, 2.5, 10.0]))
    empty = _run(settings, lambda adb: counters.overview(adb, "turbofan", rul_edges=[0.0, 10.0]))
    assert empty == {"total": 0, "labelled": 0, "assets": 0, "over_time": {},
                     "by_model_version": {},
                     "rul_histogram": [{"low": 0.0, "high": 10.0, "n": 0},
                                       {"low": None, "high": None, "n": 0}]}  # fmt: skip


def test_a_counter_failure_never_raises(settings: Settings, db: Database) -> None:
    failures = telemetry.ARCHIVE_FAILURES.labels(reason="counters")
    before = failures._value.get()  # type: ignore[attr-defined]
    _run(settings, lambda adb: counters.count_inserted(adb, [{"domain": "vibration"}]))
    bad = [(T0, None, "ball")]

    async def closed(adb: AsyncDatabase) -> None:
        await adb.client.close()
        await counters.count_labels(adb, "vibration", bad)

    _run(settings, closed)
    assert failures._value.get() == before + 2  # type: ignore[attr-defined]


def test_window_rows_walk_the_domain_time_key(settings: Settings, db: Database) -> None:
    archive_client.ensure_indexes_sync(db)
    docs = [_vibration(i) for i in range(12)] + [_turbofan(i) for i in range(12)]
    _insert(db, docs)
    since, until = docs[2]["created_at"], docs[9]["created_at"]
    rows = _run(settings, lambda adb: stats.window_rows(adb, "vibration", since=since, until=until))
    created = [d["created_at"].replace(microsecond=d["created_at"].microsecond // 1000 * 1000)
               for d in docs[2:9]]  # fmt: skip
    assert [r["created_at"] for r in rows] == created[::-1]  # newest first, to the ms
    newest = _run(settings, lambda adb: stats.window_rows(adb, "turbofan", limit=3))
    assert [r["asset_id"] for r in newest] == [d["asset_id"] for d in docs[12:][::-1][:3]]


def test_a_purge_takes_the_units_cycles_out_of_the_counters(
    settings: Settings, db: Database
) -> None:
    """`DELETE /assets/{unit}/cycles` and `machine-health units purge` delete archived cycles:
    the overview then counts what is left, labels included."""
    archive_client.ensure_indexes_sync(db)
    docs = [_turbofan(i) for i in range(24)]
    _run(settings, lambda adb: counters.count_inserted(adb, _insert(db, docs)))
    changes = _set_labels(db, "turbofan", {d["prediction_id"]: 3.0 for d in docs[:12]})
    _run(settings, lambda adb: counters.count_labels(adb, "turbofan", changes))
    _check(settings, db)
    purged = _run(
        settings, lambda adb: predictions.purge_unit_cycles(adb, "turbofan", "unit.1", 10)
    )
    assert purged["deleted"] == sum(
        1 for d in docs if d["asset_id"] == "unit.1" and d["cycle"] >= 10
    )
    _check(settings, db)
