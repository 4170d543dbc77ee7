"""The extract step builds on the domain's checkpoint (real store): a run reads from the store
only the rows labelled since the last extract (plus a margin), merges them into the cumulative
snapshot, and writes the SAME file (same sha256) a full extract of the interval writes.

Label times are the ones in `label_key` ("<domain>/<ms>/<prediction_id>"), set here directly
as the labelling API does; a relabel gives the document a new, later key.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from pymongo.database import Database

from machine_health.archive.audit import AUDIT, audit_entry
from machine_health.archive.client import PREDICTIONS, ensure_indexes_sync
from machine_health.archive.keys import epoch_ms, label_key
from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings
from machine_health.pipeline import extract
from machine_health.pipeline.checkpoint import CHECKPOINTS, OVERLAP
from machine_health.pipeline.workspace import sha256_of

DOMAIN = "vibration"
T1 = datetime(2026, 3, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1)
T3 = T2 + timedelta(days=1)
CLASSES = ("normal", "inner_race", "outer_race", "ball")


@pytest.fixture
def store(db: Database) -> Database:
    ensure_indexes_sync(db)
    return db


def _doc(
    created: datetime, label: str | None = None, labelled: datetime | None = None
) -> dict[str, Any]:
    pid = uuid.uuid4().hex
    samples = np.random.default_rng(int(pid[:8], 16)).normal(size=64).astype("<f4").tobytes()
    doc = PredictionRecord(
        prediction_id=pid, domain=DOMAIN, asset_id="pump-1",
        input={"samples": samples, "sample_rate": 12000.0, "rpm": 1797.0,
               "channel": "accelerometer"},
        output={"label": "normal"}, model_name=DOMAIN, model_version="1", user="operator",
        request_id=uuid.uuid4().hex, latency_ms=1.0, created_at=created,
    ).to_document()  # fmt: skip
    doc.pop("label_key", None)
    if label is not None and labelled is not None:
        doc.update(_label(doc["prediction_id"], label, labelled))
    return doc


def _label(pid: str, label: str, at: datetime) -> dict[str, Any]:
    """The fields a label (or a relabel) sets: a new key at its label time."""
    return {
        "label": label,
        "labelled_at": at,
        "label_source": "feedback",
        "labelled_by": "operator",
        "label_key": label_key(DOMAIN, epoch_ms(at), pid),
    }


def _relabel(store: Database, pid: str, label: str, at: datetime) -> None:
    store[PREDICTIONS].update_one({"prediction_id": pid}, {"$set": _label(pid, label, at)})


def _labelled(n: int, created: datetime, labelled: datetime) -> list[dict[str, Any]]:
    return [
        _doc(created + timedelta(seconds=i), CLASSES[i % len(CLASSES)], labelled) for i in range(n)
    ]


def _extract(settings: Settings, run_id: str, end: datetime, **options: Any) -> dict[str, Any]:
    return extract.run(
        settings=settings,
        domain=DOMAIN,
        run_id=run_id,
        interval_start=(end - timedelta(days=1)).isoformat(),
        interval_end=end.isoformat(),
        **options,
    )


def _full(settings: Settings, store: Database, run_id: str, end: datetime) -> dict[str, Any]:
    """A full extract of the interval that leaves the checkpoint as it was."""
    saved = store[CHECKPOINTS].find_one({"_id": DOMAIN})
    store[CHECKPOINTS].delete_one({"_id": DOMAIN})
    result = _extract(settings, run_id, end)
    assert result["mode"] == "full" and result["full_because"] == "no checkpoint"
    store[CHECKPOINTS].delete_one({"_id": DOMAIN})
    if saved is not None:
        store[CHECKPOINTS].insert_one(saved)
    return result


def _expected(store: Database, end: datetime) -> dict[str, str]:
    """prediction_id -> label of the rows whose current label time is at or before `end`."""
    high = label_key(DOMAIN, epoch_ms(end) + 1, "")
    docs = store[PREDICTIONS].find({"label_key": {"$gt": f"{DOMAIN}/", "$lt": high}})
    return {d["prediction_id"]: d["label"] for d in docs if d.get("label") is not None}


def _snapshot(result: dict[str, Any]) -> dict[str, str]:
    table = pq.read_table(result["snapshot"])
    return dict(
        zip(
            table.column("prediction_id").to_pylist(),
            table.column("label").to_pylist(),
            strict=True,
        )
    )


def _in_range(store: Database, low: datetime, high: datetime) -> int:
    """Documents whose label time is in (low, high]."""
    keys = {
        "$gt": label_key(DOMAIN, epoch_ms(low), "~"),
        "$lt": label_key(DOMAIN, epoch_ms(high) + 1, ""),
    }
    return store[PREDICTIONS].count_documents({"label_key": keys})


def test_incremental_extracts_equal_full_ones_over_three_runs(
    settings: Settings, store: Database
) -> None:
    day0 = T1 - timedelta(days=2)
    old = _labelled(40, day0, T1 - timedelta(hours=6))
    unlabelled = [_doc(day0 + timedelta(hours=1, seconds=i)) for i in range(5)]
    other = {**_doc(day0), "domain": "turbofan", "label_key": f"turbofan/{epoch_ms(T1):013d}/x"}
    store[PREDICTIONS].insert_many([*old, *unlabelled, other])

    # run 1: no checkpoint yet, a full extract that sets it at T1
    first = _extract(settings, "r1", T1)
    assert first["mode"] == "full" and first["full_because"] == "no checkpoint"
    assert first["rows"] == 40 and _snapshot(first) == _expected(store, T1)
    assert first["checkpoint_moved"]["watermark"] == T1.isoformat()
    assert first["labels"] == {c: 10 for c in CLASSES}
    assert _extract(settings, "r1", T1) == first  # a retried task returns its recorded result

    # between runs 1 and 2
    new2 = _labelled(12, T1 + timedelta(hours=1), T1 + timedelta(hours=3))
    # labelled 3 minutes before the watermark but written after run 1 read (another replica's
    # clock, a slow write): inside the overlap, so run 2 reads it
    late = _doc(T1 - timedelta(hours=2), "ball", T1 - timedelta(minutes=3))
    # labelled after T2 (before run 2 runs): not in T2's snapshot
    future = _doc(T1 + timedelta(hours=2), "normal", T2 + timedelta(minutes=30))
    store[PREDICTIONS].insert_many([*new2, late, future])
    _relabel(store, old[0]["prediction_id"], "outer_race", T1 + timedelta(hours=5))  # in (T1, T2]
    # relabelled after T2: the store no longer has its label as of T2, so T2's snapshot (full or
    # incremental) leaves the row out; it comes back in T3's with the new label
    _relabel(store, old[1]["prediction_id"], "inner_race", T2 + timedelta(minutes=20))

    second = _extract(settings, "r2", T2)
    assert second["mode"] == "incremental" and "full_because" not in second
    assert second["checkpoint"]["watermark"] == T1.isoformat()
    assert second["checkpoint"]["sha256"] == first["sha256"]
    assert second["read"] == {"since": (T1 - OVERLAP).isoformat(), "until": T2.isoformat()}
    # read: the 12 new rows, the late one and the relabel in (T1 - OVERLAP, T2]; and the rows
    # labelled after T2 (the relabel and the future row)
    assert second["new_rows"] == _in_range(store, T1 - OVERLAP, T2) == 14
    assert second["labelled_after_end"] == 2
    got = _snapshot(second)
    assert got == _expected(store, T2)
    assert got[old[0]["prediction_id"]] == "outer_race" and late["prediction_id"] in got
    assert old[1]["prediction_id"] not in got and future["prediction_id"] not in got
    assert second["rows"] == 40 - 1 + 12 + 1
    full2 = _full(settings, store, "f2", T2)
    assert full2["sha256"] == second["sha256"] and full2["rows"] == second["rows"]
    assert second["rows_labelled_in_interval"] == full2["rows_labelled_in_interval"] == 13
    assert second["labels"] == full2["labels"]

    # between runs 2 and 3: more labels, a relabel inside the overlap (by a replica whose clock
    # is behind), the relabel of run 2 now falls inside T3
    new3 = _labelled(7, T2 + timedelta(hours=1), T2 + timedelta(hours=8))
    store[PREDICTIONS].insert_many(new3)
    _relabel(store, new2[0]["prediction_id"], "ball", T2 - timedelta(minutes=1))
    third = _extract(settings, "r3", T3)
    assert third["mode"] == "incremental" and third["checkpoint"]["sha256"] == second["sha256"]
    assert third["new_rows"] == _in_range(store, T2 - OVERLAP, T3)
    got = _snapshot(third)
    assert got == _expected(store, T3)
    assert got[old[1]["prediction_id"]] == "inner_race" and got[new2[0]["prediction_id"]] == "ball"
    assert future["prediction_id"] in got and third["rows"] == 40 + 12 + 2 + 7
    full3 = _full(settings, store, "f3", T3)
    assert full3["sha256"] == third["sha256"]

    # the snapshot's rows are in creation order; its manifest says how it was built
    table = pq.read_table(third["snapshot"])
    created = table.column("created_at").to_pylist()
    assert created == sorted(created)
    ws = settings.runs_dir / DOMAIN / "r3"
    manifest = json.loads((ws / extract.MANIFEST).read_text())
    assert manifest["mode"] == "incremental" and manifest["sha256"] == third["sha256"]
    assert manifest["rows"] == third["rows"] and manifest["new_rows"] == third["new_rows"]
    saved = store[CHECKPOINTS].find_one({"_id": DOMAIN})
    assert saved["watermark_ms"] == epoch_ms(T3) and saved["watermark"] == T3.isoformat()
    assert saved["sha256"] == third["sha256"] == sha256_of(saved["path"])
    assert saved["rows"] == third["rows"] and saved["run_id"] == "r3"
    assert saved["path"].startswith(str(settings.runs_dir / DOMAIN / "_cumulative"))


def test_a_rerun_of_an_older_interval_is_full_and_leaves_the_checkpoint(
    settings: Settings, store: Database
) -> None:
    store[PREDICTIONS].insert_many(_labelled(20, T1 - timedelta(days=1), T1 - timedelta(hours=1)))
    store[PREDICTIONS].insert_many(_labelled(6, T1, T1 + timedelta(hours=2)))
    _extract(settings, "r1", T1)
    second = _extract(settings, "r2", T2)
    assert second["mode"] == "incremental" and second["rows"] == 26
    before = store[CHECKPOINTS].find_one({"_id": DOMAIN})

    backfill = _extract(settings, "backfill-1", T1)
    assert backfill["mode"] == "full" and "before the checkpoint" in backfill["full_because"]
    assert backfill["rows"] == 20 and backfill["checkpoint_moved"] is None
    assert store[CHECKPOINTS].find_one({"_id": DOMAIN}) == before
    assert _snapshot(backfill) == _expected(store, T1)
    # a forced rerun of the latest interval reads only the overlap and changes nothing
    again = _extract(settings, "r2", T2, force=True)
    assert again["mode"] == "incremental" and again["sha256"] == second["sha256"]
    assert again["new_rows"] == 0


def test_a_missing_or_corrupt_cumulative_snapshot_gives_a_full_extract(
    settings: Settings, store: Database
) -> None:
    store[PREDICTIONS].insert_many(_labelled(15, T1 - timedelta(days=1), T1 - timedelta(hours=1)))
    first = _extract(settings, "r1", T1)
    path = store[CHECKPOINTS].find_one({"_id": DOMAIN})["path"]

    # corrupt (not the recorded sha256): full, and the checkpoint moves to a good file
    with open(path, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\x00garbage\x00")
    store[PREDICTIONS].insert_many(_labelled(4, T1, T1 + timedelta(hours=2)))
    second = _extract(settings, "r2", T2)
    assert second["mode"] == "full" and "sha256" in second["full_because"]
    assert second["rows"] == 19 and second["checkpoint_moved"]["watermark"] == T2.isoformat()
    assert _snapshot(second) == _expected(store, T2)
    # the run's own snapshot was never the corrupted file
    assert first["sha256"] == sha256_of(settings.runs_dir / DOMAIN / "r1" / extract.SNAPSHOT)

    # missing: full again
    saved = store[CHECKPOINTS].find_one({"_id": DOMAIN})
    Path(saved["path"]).unlink()
    store[PREDICTIONS].insert_many(_labelled(3, T2, T2 + timedelta(hours=2)))
    third = _extract(settings, "r3", T3)
    assert third["mode"] == "full" and "missing" in third["full_because"] and third["rows"] == 22

    # purged predictions (audited) since the checkpoint: full (the cumulative rows may be gone)
    store[AUDIT].insert_one(
        audit_entry("purge_unit_cycles", user="admin", via="cli", domain=DOMAIN, deleted=1)
    )
    fourth = _extract(settings, "r4", T3 + timedelta(days=1))
    assert fourth["mode"] == "full" and "purged" in fourth["full_because"]
    # a purge more than OVERLAP before the checkpoint's read does not matter: incremental again
    store[AUDIT].update_many({}, {"$set": {"at": datetime.now(UTC) - 2 * OVERLAP}})
    fifth = _extract(settings, "r5", T3 + timedelta(days=2))
    assert fifth["mode"] == "incremental" and fifth["sha256"] == fourth["sha256"]


def test_an_incremental_extract_reads_the_new_rows_not_the_archive(
    settings: Settings, store: Database
) -> None:
    archive = _labelled(3000, T1 - timedelta(days=1), T1 - timedelta(hours=3))
    in_overlap = _labelled(5, T1 - timedelta(hours=2), T1 - timedelta(minutes=4))
    store[PREDICTIONS].insert_many([*archive, *in_overlap])
    first = _extract(settings, "r1", T1)
    assert first["mode"] == "full" and first["new_rows"] == first["rows"] == 3005

    store[PREDICTIONS].insert_many(_labelled(50, T1 + timedelta(hours=1), T1 + timedelta(hours=2)))
    second = _extract(settings, "r2", T2)
    assert second["mode"] == "incremental" and second["rows"] == 3055
    assert second["new_rows"] == 50 + 5  # the new rows and the overlap's, not 3055
    assert second["labelled_after_end"] == 0
    assert second["sha256"] == _full(settings, store, "f2", T2)["sha256"]
