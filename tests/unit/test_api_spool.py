"""The archive spool: fsync'd JSON lines that round-trip records exactly, replay offsets, limits."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from machine_health.archive.records import decode_samples, encode_samples
from machine_health.archive.spool import Spool, SpoolFile
from machine_health.errors import SpoolFull


def _record(i: int) -> dict[str, object]:
    samples = np.sin(np.linspace(0, 20, 256) + i)
    return {
        "prediction_id": f"p{i}",
        "created_at": datetime(2026, 1, 1, 12, 0, i % 60, 123000, tzinfo=UTC),
        "input": {"samples": encode_samples(samples), "sample_rate": 12000.0, "rpm": None},
        "output": {"rul": 10.5 + i},
    }


def test_records_round_trip_exactly(tmp_path: Path) -> None:
    spool = Spool(tmp_path, owner="replica-1", max_bytes=1 << 20)
    spool.open()
    records = [_record(i) for i in range(5)]
    spool.append(records)
    assert spool.depth == 5
    docs, _ = spool.own.read(100)  # type: ignore[union-attr]
    assert docs == records  # bytes and tz-aware datetimes come back as they were
    np.testing.assert_allclose(
        decode_samples(docs[0]["input"]["samples"]), np.sin(np.linspace(0, 20, 256)), atol=1e-6
    )


def test_commit_then_reset_empties_the_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, owner="r", max_bytes=1 << 20)
    spool.open()
    own = spool.own
    assert own is not None
    spool.append([_record(i) for i in range(3)])
    first, offset = own.read(2)
    own.commit(offset, len(first))
    assert [d["prediction_id"] for d in first] == ["p0", "p1"] and spool.depth == 1
    assert not own.reset_if_drained()  # p2 still waits
    rest, offset = own.read(10)
    assert [d["prediction_id"] for d in rest] == ["p2"]
    own.commit(offset, len(rest))
    assert own.reset_if_drained() and own.size() == 0 and spool.depth == 0


def test_spool_full_refuses_without_writing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, owner="r", max_bytes=4096)
    spool.open()
    spool.append([_record(0)])
    size = spool.own.size()  # type: ignore[union-attr]
    with pytest.raises(SpoolFull):
        spool.append([_record(i) for i in range(1, 10)])
    assert spool.own.size() == size and spool.depth == 1  # type: ignore[union-attr]


def test_a_dead_process_file_is_adopted_with_its_offset_and_torn_tail(tmp_path: Path) -> None:
    # What a crash leaves: three full lines, one of them replayed, then a torn line.
    dead = Spool(tmp_path, owner="old", max_bytes=1 << 20)
    dead.open()
    dead.append([_record(i) for i in range(3)])
    own = dead.own
    assert own is not None
    docs, offset = own.read(1)
    own.commit(offset, 1)
    with own.path.open("ab") as handle:
        handle.write(b'{"prediction_id": "torn')
    own._handle.close()  # the process died: its lock is gone, the files stay

    live = Spool(tmp_path, owner="new", max_bytes=1 << 20)
    live.open()
    assert len(live.adopted) == 1 and live.depth == 2
    orphan = live.adopted[0]
    docs, end = orphan.read(10)
    assert [d["prediction_id"] for d in docs] == ["p1", "p2"]
    orphan.commit(end, len(docs))
    live.drop_adopted(orphan)
    assert not orphan.path.exists() and live.depth == 0


def test_a_live_process_file_is_not_adopted(tmp_path: Path) -> None:
    first = Spool(tmp_path, owner="a", max_bytes=1 << 20)
    first.open()
    first.append([_record(0)])
    second = Spool(tmp_path, owner="b", max_bytes=1 << 20)
    second.open()
    assert second.adopted == []  # the flock of the first is still held
    assert isinstance(first.own, SpoolFile) and first.own.path.name.endswith(f"{os.getpid()}.jsonl")


def _keyed(i: int, key: str | None) -> dict[str, object]:
    return {**_record(i), "idempotency_key": key, "asset_id": '"prediction_id": "p0"'}


def test_find_returns_a_keyed_record_from_any_spool_file_of_the_folder(tmp_path: Path) -> None:
    mine = Spool(tmp_path, owner="a", max_bytes=1 << 20)
    mine.open()
    sibling = Spool(tmp_path, owner="b", max_bytes=1 << 20)  # another live process's file
    sibling.open()
    mine.append([_keyed(0, None), _keyed(1, "k1")])
    assert mine.find("p1") == _keyed(1, "k1")  # exactly what was spooled
    assert mine.find("p0") is None  # no Idempotency-Key: never looked up
    assert mine.find("p7") is None
    sibling.append([_keyed(7, "k7")])  # appended after the first look-up: indexed incrementally
    assert mine.find("p7") == _keyed(7, "k7")

    own = sibling.own
    assert own is not None
    docs, end = own.read(10)
    own.commit(end, len(docs))
    assert own.reset_if_drained()  # replayed into the store: the file is emptied
    assert mine.find("p7") is None
    sibling.append([_keyed(8, "k8"), _keyed(9, "k9")])  # refilled past the old indexed length
    assert mine.find("p9") == _keyed(9, "k9") and mine.find("p7") is None
    sibling.close()  # not replayed yet: the file stays, for the next process to adopt
    assert mine.find("p9") == _keyed(9, "k9")
    own.path.unlink()  # replayed and deleted by whoever adopted it
    assert mine.find("p9") is None and mine.find("p1") == _keyed(1, "k1")
