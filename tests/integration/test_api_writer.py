"""The group-commit writer on the real store: batching, duplicates, spool when unreachable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.database import Database

from machine_health.archive import client as archive_client
from machine_health.archive.spool import Spool
from machine_health.archive.writer import ArchiveWriter
from machine_health.config import Settings
from machine_health.errors import SpoolFull
from machine_health.monitoring import metrics
from tests.conftest import free_port, make_settings


def _batches() -> float:
    return next(
        s.value
        for s in metrics.ARCHIVE_BATCH_SIZE.collect()[0].samples
        if s.name.endswith("_count")
    )


def test_concurrent_submits_share_insert_many_calls(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)

    async def run() -> list[str]:
        client = archive_client.async_client(settings)
        writer = ArchiveWriter(
            client[settings.mongodb_db][archive_client.PREDICTIONS],
            Spool(tmp_path / "spool", owner="t", max_bytes=1 << 20),
        )
        await writer.start()
        try:
            docs = [{"prediction_id": f"g{i}", "n": i} for i in range(300)]
            outcomes = await asyncio.gather(*(writer.submit(d) for d in docs))
            again = await writer.submit({"prediction_id": "g7", "n": -1})
            return [*outcomes, again]
        finally:
            await writer.close()
            await client.close()

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
