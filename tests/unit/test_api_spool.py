"""The archive spool: fsync'd JSON lines that round-trip records exactly, replay offsets, limits."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from machine_health.archive.spool import DeadLetters, Spool, SpoolFile
from machine_health.errors import SpoolFull, StoreError
from machine_health.samples import decode_samples, encode_samples


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
    docs = spool.own.read(100).docs  # type: ignore[union-attr]
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
    first, _, _, offset = own.read(2)
    own.commit(offset, len(first))
    assert [d["prediction_id"] for d in first] == ["p0", "p1"] and spool.depth == 1
    assert not own.reset_if_drained()  # p2 still waits
    rest, _, _, offset = own.read(10)
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
    docs, _, _, offset = own.read(1)
    own.commit(offset, 1)
    with own.path.open("ab") as handle:
        handle.write(b'{"prediction_id": "torn')
    own._handle.close()  # the process died: its lock is gone, the files stay

    live = Spool(tmp_path, owner="new", max_bytes=1 << 20)
    live.open()
    assert len(live.adopted) == 1 and live.depth == 2
    orphan = live.adopted[0]
    docs, _, _, end = orphan.read(10)
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
    assert isinstance(first.own, SpoolFile) and isinstance(second.own, SpoolFile)


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
    docs, _, _, end = own.read(10)
    own.commit(end, len(docs))
    assert own.reset_if_drained()  # replayed into the store: the file is emptied
    assert mine.find("p7") is None
    sibling.append([_keyed(8, "k8"), _keyed(9, "k9")])  # refilled past the old indexed length
    assert mine.find("p9") == _keyed(9, "k9") and mine.find("p7") is None
    sibling.close()  # not replayed yet: the file stays, for the next process to adopt
    assert mine.find("p9") == _keyed(9, "k9")
    own.path.unlink()  # replayed and deleted by whoever adopted it
    assert mine.find("p9") is None and mine.find("p1") == _keyed(1, "k1")


def _die(spool: Spool) -> None:
    """What a SIGKILL leaves: the files stay as they are, the lock goes with the process."""
    for spool_file in spool.files():
        spool_file._handle.close()


def _replayable(spool: Spool) -> list[str]:
    """prediction_ids the replay would read from every file of `spool`, oldest file first."""
    ids = []
    for spool_file in spool.files():
        ids += [d["prediction_id"] for d in spool_file.read(1000).docs]
    return ids


def test_a_restarted_process_never_appends_to_its_predecessors_file(tmp_path: Path) -> None:
    """In a container the pid is always 1: the file name must not come from it."""
    dead = Spool(tmp_path, owner="api-0", max_bytes=1 << 20)
    dead.open()
    dead.append([_record(0), _record(1)])
    old = dead.own
    assert old is not None
    with old.path.open("ab") as handle:  # killed in the middle of an append
        handle.write(b'{"prediction_id": "torn", "out')
    _die(dead)

    restarted = Spool(tmp_path, owner="api-0", max_bytes=1 << 20)  # same replica, same pid
    restarted.open()
    assert restarted.own is not None and restarted.own.path != old.path
    restarted.append([_record(2)])
    assert [f.path for f in restarted.adopted] == [old.path]
    assert _replayable(restarted) == ["p0", "p1", "p2"]  # p2 did not fuse with the torn tail
    assert restarted.own.read(10).rejected == []


def test_the_replay_picks_up_every_spool_file_of_earlier_processes(tmp_path: Path) -> None:
    """Files of several dead processes (and one named the old way, by pid) are all adopted."""
    for i, owner in enumerate(["api-0", "api-0", "api-1"]):
        dead = Spool(tmp_path, owner=owner, max_bytes=1 << 20)
        dead.open()
        dead.append([_record(10 * i), _record(10 * i + 1)])
        _die(dead)
    legacy = tmp_path / "spool-api-0-1.jsonl"  # pid 1, written before the random ids
    legacy.write_bytes(Path(next(tmp_path.glob("spool-*.jsonl"))).read_bytes())
    live = Spool(tmp_path, owner="api-0", max_bytes=1 << 20)
    live.open()
    assert len(live.adopted) == 4 and live.depth == 8
    assert sorted(set(_replayable(live))) == ["p0", "p1", "p10", "p11", "p20", "p21"]


def test_a_failed_write_truncates_the_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, owner="r", max_bytes=1 << 20)
    spool.open()
    spool.append([_record(0)])
    own = spool.own
    assert own is not None
    size = own.size()
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(StoreError, match="No space left"):
        spool.append([_record(1)])
    monkeypatch.undo()
    assert own.size() == size and spool.depth == 1  # nothing of the failed append stayed
    spool.append([_record(2)])
    chunk = own.read(10)
    assert [d["prediction_id"] for d in chunk.docs] == ["p0", "p2"] and chunk.rejected == []


def test_a_failed_fsync_takes_the_append_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not acknowledged (the request gets a 503), so not spooled: no replay may archive it."""
    spool = Spool(tmp_path, owner="r", max_bytes=1 << 20)
    spool.open()
    own = spool.own
    assert own is not None
    real_fsync, calls = os.fsync, []

    def fail_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail_once)
    with pytest.raises(StoreError):
        spool.append([_record(1)])
    monkeypatch.undo()
    assert own.size() == 0 and spool.depth == 0


class _Crash(BaseException):
    """The process dies here."""


def test_a_crash_inside_reset_if_drained_never_skips_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash right after the first of reset_if_drained's two steps (offset, data), then the
    replica restarts and spools again: the replay reads every record (the drained ones again,
    harmless duplicates), none is skipped and no line is read from its middle."""
    first = Spool(tmp_path, owner="api-0", max_bytes=1 << 20)
    first.open()
    own = first.own
    assert own is not None
    first.append([_record(i) for i in range(3)])
    chunk = own.read(10)
    own.commit(chunk.end, len(chunk.docs))

    def crash(fd: int) -> None:
        raise _Crash

    monkeypatch.setattr(os, "fsync", crash)  # the first step's fsync: the crash point
    with pytest.raises(_Crash):
        own.reset_if_drained()
    monkeypatch.undo()
    _die(first)

    restarted = Spool(tmp_path, owner="api-0", max_bytes=1 << 20)
    restarted.open()
    restarted.append([_record(9)])
    ids = _replayable(restarted)
    assert "p9" in ids
    assert set(ids) <= {"p0", "p1", "p2", "p9"}
    assert all(not f.read(1000).rejected for f in restarted.files())


def test_a_line_that_is_not_a_record_is_returned_apart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, owner="r", max_bytes=1 << 20)
    spool.open()
    own = spool.own
    assert own is not None
    spool.append([_record(0)])
    with own.path.open("ab") as handle:
        handle.write(b'{"prediction_id": "p1", "created_at": {"$date": "not a date"}}\n')
        handle.write(b"[1, 2, 3]\n")
        handle.write(b"\xff\xfe garbage\n")
    spool.append([_record(4)])
    chunk = own.read(100)
    assert [d["prediction_id"] for d in chunk.docs] == ["p0", "p4"]
    assert len(chunk.lines) == 2 and chunk.lines[0].startswith(b'{"prediction_id": "p0"')
    assert [reason.split(":")[0] for _, reason in chunk.rejected] == [
        "undecodable", "not a document", "undecodable",
    ]  # fmt: skip
    assert chunk.end == own.size()


def test_dead_letters_keep_the_line_the_reason_and_the_time(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path)
    assert dead.add([(b'{"a": 1}\n', "unencodable: OverflowError"), (b"\xff\n", "x")], "s.jsonl")
    entries = dead.entries()
    assert [e["line"] for e in entries] == ['{"a": 1}', "\ufffd"]
    assert (
        entries[0]["reason"] == "unencodable: OverflowError" and entries[0]["source"] == "s.jsonl"
    )
    assert datetime.fromisoformat(entries[0]["at"]).tzinfo is not None
    assert not list(tmp_path.glob("spool-*.jsonl"))  # never taken for a spool file
