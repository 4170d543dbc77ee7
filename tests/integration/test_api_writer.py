"""The group-commit writer on the real store: batching, duplicates, spool when unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo.database import Database

from machine_health import telemetry
from machine_health.archive import client as archive_client
from machine_health.archive import counters, labels
from machine_health.archive.records import PredictionRecord
from machine_health.archive.spool import DeadLetters, Spool
from machine_health.archive.writer import ArchiveWriter
from machine_health.config import Settings
from machine_health.errors import InputError, SpoolFull
from tests.support.servers import free_port
from tests.support.settings import make_settings


def _batches() -> float:
    return next(
        s.value
        for s in telemetry.ARCHIVE_BATCH_SIZE.collect()[0].samples
        if s.name.endswith("_count")
    )


@contextlib.asynccontextmanager
async def running_writer(
    settings: Settings, spool_dir: Path, **options: float
) -> AsyncIterator[ArchiveWriter]:
    """A started group-commit writer on the real store's predictions (and a spool), closed after."""
    client = archive_client.async_client(settings)
    writer = ArchiveWriter(
        client[settings.mongodb_db][archive_client.PREDICTIONS],
        Spool(spool_dir, owner="t", max_bytes=1 << 20),
        **options,
    )
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await client.close()


def test_concurrent_submits_share_insert_many_calls(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)

    async def run() -> list[str]:
        async with running_writer(settings, tmp_path / "spool") as writer:
            docs = [{"prediction_id": f"g{i}", "n": i} for i in range(300)]
            outcomes = await asyncio.gather(*(writer.submit(d) for d in docs))
            again = await writer.submit({"prediction_id": "g7", "n": -1})
            return [*outcomes, again]

    before = _batches()
    outcomes = asyncio.run(run())
    batches = _batches() - before
    assert outcomes[:300] == ["archived"] * 300
    assert outcomes[300] == "duplicate"  # the unique prediction_id refused a second document
    assert batches <= 30  # 301 records, a handful of round trips
    assert db[archive_client.PREDICTIONS].find_one({"prediction_id": "g7"})["n"] == 7


def test_unreachable_store_spools_and_a_full_spool_refuses(tmp_path: Path) -> None:
    # A real client pointed at a port where nothing listens.
    settings = make_settings(tmp_path, f"mongodb://127.0.0.1:{free_port()}/", store_timeout_ms=300)

    async def run() -> tuple[list[str], Exception | None, int]:
        client = archive_client.async_client(settings)
        spool = Spool(tmp_path / "spool", owner="t", max_bytes=4096)
        writer = ArchiveWriter(client["x"][archive_client.PREDICTIONS], spool)
        await writer.start()
        try:
            first = await asyncio.gather(
                *(writer.submit({"prediction_id": f"s{i}", "pad": "x" * 500}) for i in range(4))
            )
            try:
                await writer.submit({"prediction_id": "big", "pad": "x" * 8000})
                refused = None
            except SpoolFull as exc:
                refused = exc
            return list(first), refused, spool.depth
        finally:
            await writer.close()
            await client.close()

    outcomes, refused, depth = asyncio.run(run())
    assert outcomes == ["spooled"] * 4 and depth == 4
    assert isinstance(refused, SpoolFull) and "spool is full" in str(refused)
    files = list((tmp_path / "spool").glob("spool-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 4


def _counter(counter: object, **labels: str) -> float:
    return counter.labels(**labels)._value.get() if labels else counter._value.get()  # type: ignore[attr-defined]


def test_one_unencodable_record_is_refused_alone_and_the_group_is_archived(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    """An int beyond 8 bytes in one record of a group commit: 422 for it, archived for all."""
    archive_client.ensure_indexes_sync(db)

    async def run() -> list[object]:
        async with running_writer(settings, tmp_path / "spool") as writer:
            docs = [{"prediction_id": f"b{i}", "cycle": i} for i in range(40)]
            docs.insert(20, {"prediction_id": "too-big", "cycle": 2**63})
            return await asyncio.gather(*(writer.submit(d) for d in docs), return_exceptions=True)

    outcomes = asyncio.run(run())
    refused = outcomes.pop(20)
    assert isinstance(refused, InputError) and "8-byte ints" in str(refused)
    assert outcomes == ["archived"] * 40
    stored = {d["prediction_id"] for d in db[archive_client.PREDICTIONS].find({}, {"_id": 0})}
    assert stored == {f"b{i}" for i in range(40)}
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))  # nothing spooled either


def _dead_process_spool(directory: Path, docs: list[dict], extra_lines: bytes = b"") -> Path:
    """A spool file as a killed process (today's code) leaves it: records it could encode as
    Extended JSON, whatever the store thinks of them."""
    dead = Spool(directory, owner="dead", max_bytes=1 << 20)
    dead.open()
    own = dead.own
    assert own is not None
    dead.append(docs[:2])
    with own.path.open("ab") as handle:
        handle.write(extra_lines)
    dead.append(docs[2:])
    own._handle.close()
    return own.path


def test_the_replay_dead_letters_what_it_cannot_store_and_keeps_draining(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)
    spool_dir = tmp_path / "spool"
    docs = [
        {"prediction_id": "r0", "cycle": 1},
        {"prediction_id": "r1", "cycle": 2**63},  # spooled fine, refused by BSON at replay
        {"prediction_id": "r2", "cycle": 3},
        {"prediction_id": "r3", "cycle": 4},
    ]
    path = _dead_process_spool(spool_dir, docs, b"not json at all\n")
    before = {
        k: _counter(telemetry.SPOOL_DEAD_LETTERS, reason=k) for k in ("unencodable", "undecodable")
    }

    async def run() -> int:
        # start() replays what the dead process left, before serving
        async with running_writer(settings, spool_dir) as writer:
            return writer.spool.depth

    assert asyncio.run(run()) == 0
    stored = {d["prediction_id"] for d in db[archive_client.PREDICTIONS].find({}, {"_id": 0})}
    assert stored == {"r0", "r2", "r3"}
    assert not path.exists()  # drained and deleted
    entries = DeadLetters(spool_dir).entries()
    assert [e["reason"].split(":")[0] for e in entries] == ["undecodable", "unencodable"]
    assert entries[0]["line"] == "not json at all" and entries[0]["source"] == path.name
    assert "8-byte ints" in entries[1]["reason"] and '"r1"' in entries[1]["line"]
    for kind in ("unencodable", "undecodable"):
        assert _counter(telemetry.SPOOL_DEAD_LETTERS, reason=kind) == before[kind] + 1


def test_a_replay_task_that_dies_is_restarted_and_drains_the_spool(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)
    restarts = _counter(telemetry.ARCHIVE_TASK_RESTARTS, task="replay")

    async def run() -> int:
        async with running_writer(settings, tmp_path / "spool", retry_seconds=0.05) as writer:
            real, calls = writer.replay_once, []

            async def dies_once() -> bool:
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("a bug in the replay")
                return await real()

            writer.replay_once = dies_once  # type: ignore[method-assign]
            writer.spool.append([{"prediction_id": f"d{i}"} for i in range(5)])
            writer._wake_replay.set()
            for _ in range(200):
                if writer.spool.depth == 0:
                    break
                await asyncio.sleep(0.05)
            return writer.spool.depth

    assert asyncio.run(run()) == 0
    assert db[archive_client.PREDICTIONS].estimated_document_count() == 5
    assert _counter(telemetry.ARCHIVE_TASK_RESTARTS, task="replay") == restarts + 1


def test_new_records_go_to_the_store_while_a_backlog_replays(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    """Steady traffic after an outage: new records are archived directly, so the spool drains.

    Spooling them behind the backlog (as the writer once did) kept the spool from ever draining
    while requests kept coming: each replay pass found the records appended meanwhile.
    """
    archive_client.ensure_indexes_sync(db)

    async def run() -> tuple[list[str], int]:
        async with running_writer(settings, tmp_path / "spool", retry_seconds=0.05) as writer:
            real = writer.replay_once
            release = asyncio.Event()

            async def slow_replay() -> bool:  # the backlog stays until the new records are in
                await release.wait()
                return await real()

            writer.replay_once = slow_replay  # type: ignore[method-assign]
            writer.spool.append([{"prediction_id": f"old{i}"} for i in range(50)])
            writer._wake_replay.set()
            outcomes = [await writer.submit({"prediction_id": f"new{i}"}) for i in range(20)]
            release.set()
            for _ in range(200):
                if writer.spool.depth == 0:
                    break
                await asyncio.sleep(0.05)
            return outcomes, writer.spool.depth

    outcomes, depth = asyncio.run(run())
    assert outcomes == ["archived"] * 20  # not "spooled" behind the 50 waiting records
    assert depth == 0
    assert db[archive_client.PREDICTIONS].count_documents({}) == 70


def test_cycles_spooled_when_the_units_failure_was_posted_are_labelled_at_replay(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    """A failure back-fill labels the cycles stored then; those a dead replica's spool still
    held (cycles 4-6) get their true RUL when the restarted writer replays them, from the
    recorded failure; a unit without a failure stays unlabelled; the counters count them."""
    archive_client.ensure_indexes_sync(db)
    t0 = datetime(2026, 4, 1, tzinfo=UTC)

    def cycle(unit: str, c: int) -> dict:
        return PredictionRecord(
            prediction_id=f"{unit}-{c}", domain="turbofan", asset_id=unit, cycle=c,
            input={"cycle": c}, output={"rul": 50.0}, model_name="m", model_version="1",
            user="operator", request_id="r", latency_ms=1.0,
            created_at=t0 + timedelta(minutes=c),
        ).to_document()  # fmt: skip

    db[archive_client.PREDICTIONS].insert_many([cycle("failed", c) for c in (1, 2, 3)])
    spooled = [cycle("failed", c) for c in (4, 5, 6)] + [cycle("running", c) for c in (1, 2)]
    _dead_process_spool(tmp_path / "spool", spooled)

    async def run() -> dict:
        client = archive_client.async_client(settings)
        try:
            adb = client[settings.mongodb_db]
            done = await labels.backfill_failure(
                adb, "failed", 10, labelled_by="maintenance", domain="turbofan"
            )
            async with running_writer(settings, tmp_path / "spool"):
                pass  # start() replays the dead process's spool
            return done
        finally:
            await client.close()

    assert asyncio.run(run())["labelled"] == 3  # only the stored ones, when it was posted
    docs = {d["prediction_id"]: d for d in db[archive_client.PREDICTIONS].find({})}
    assert {p: docs[p]["label"] for p in docs if p.startswith("failed")} == {
        f"failed-{c}": float(10 - c) for c in range(1, 7)
    }
    assert all(docs[f"failed-{c}"]["label_key"].startswith("turbofan/") for c in (4, 5, 6))
    assert docs["running-1"]["label"] is None and "label_key" not in docs["running-2"]
    assert labels.count_labelled(db, "turbofan", datetime.now(UTC)) == 6
    total = db[counters.COUNTERS].find_one({"_id": "turbofan/all"})
    assert (total["n"], total["labelled"]) == (5, 6)  # 3 were inserted before the writer ran
