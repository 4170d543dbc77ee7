"""The archive's serving-path and pipeline reads cost the same at 10 k and 200 k documents on
the real embedded store (issue #27): each is a range on one indexed sort key (archive/keys.py).

The figures are ratios of medians measured in one run, so the machine's speed cancels out. A
control query of the kind these reads replaced (a unit's cycles found by equality and sorted)
is timed too: it must grow with the archive, or the harness could not see a scan at all.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from machine_health.archive import client as archive_client
from machine_health.archive import keys, labels, predictions
from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UNITS = 80  # units written round-robin: at 10 k each holds 125 cycles, more than a history
SMALL, LARGE = 10_000, 200_000
#: the most a key-range read may slow down from 10 k to 200 k documents (a scan: ~20x)
MAX_RATIO = 2.5


def _docs(start: int, stop: int) -> list[dict[str, Any]]:
    return [
        PredictionRecord(
            prediction_id=f"p{i:08d}", domain="turbofan", asset_id=f"u{i % UNITS}",
            cycle=i // UNITS + 1, input={"cycle": i // UNITS + 1, "s2": 641.8, "s3": 1589.7},
            output={"rul": 100.0}, model_name="m", model_version="1", user="operator",
            request_id="r", latency_ms=1.0, created_at=T0 + timedelta(seconds=i),
        ).to_document()
        for i in range(start, stop)
    ]  # fmt: skip


def _load(db: Database, start: int, stop: int) -> None:
    for first in range(start, stop, 5000):
        db[archive_client.PREDICTIONS].insert_many(_docs(first, min(first + 5000, stop)))


def _median_ms(call: Callable[[], Any], repeat: int = 7) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _async_median_ms(
    settings: Settings, call: Callable[[AsyncDatabase, int], Awaitable[Any]], repeat: int = 7
) -> float:
    """Median ms of `call(db, attempt)` on the API's async client (attempt 0 is a warm-up)."""

    async def main() -> float:
        client = archive_client.async_client(settings)
        try:
            db = client[settings.mongodb_db]
            await call(db, 0)
            times = []
            for attempt in range(1, repeat + 1):
                started = time.perf_counter()
                await call(db, attempt)
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000
        finally:
            await client.close()

    return asyncio.run(main())


def _measure(settings: Settings, db: Database, size: int, tag: str) -> dict[str, float]:
    """Each read at the archive's current `size`; `tag` keeps labels of runs apart."""
    coll = db[archive_client.PREDICTIONS]
    started = datetime.now(UTC)
    middle = keys.time_part(T0 + timedelta(seconds=size // 2), "p")

    async def history(adb: AsyncDatabase, attempt: int) -> None:
        rows = await predictions.unit_history(adb, f"u{attempt}", 100, domain="turbofan")
        assert len(rows) == 100

    async def deep_page(adb: AsyncDatabase, attempt: int) -> None:
        page, cursor = await predictions.find_page(
            adb, domains=["turbofan"], after=middle, limit=50
        )
        assert len(page) == 50 and cursor is not None

    async def asset_page(adb: AsyncDatabase, attempt: int) -> None:
        page, _ = await predictions.find_page(adb, domains=["turbofan"], asset_id="u7", limit=20)
        assert len(page) == 20

    async def failure(adb: AsyncDatabase, attempt: int) -> None:
        unit = f"u{10 + attempt}"
        cycles = size // UNITS
        done = await labels.backfill_failure(
            adb, unit, cycles + 10, labelled_by=tag, domain="turbofan"
        )
        assert done["labelled"] == cycles

    labelled: list[int] = []

    def new_labels() -> None:  # the labels of this size's back-fills
        rows = list(labels.stream_labelled_range(db, "turbofan", datetime.now(UTC), since=started))
        assert rows and all(r["labelled_by"] == tag for r in rows)
        labelled.append(len(rows))

    def control() -> None:  # the kind of read this issue replaced: equality, then a sort
        found = coll.find({"domain": "turbofan", "asset_id": "u3"}).sort("cycle", DESCENDING)
        assert len(list(found.limit(100))) == 100

    figures = {
        "unit_history": _async_median_ms(settings, history),
        "deep_page": _async_median_ms(settings, deep_page),
        "asset_page": _async_median_ms(settings, asset_page),
        "failure_backfill": _async_median_ms(settings, failure, repeat=3),
    }
    # per row: an extract reads the rows labelled since its checkpoint, as many as there are
    figures["labelled_since"] = _median_ms(new_labels) / labelled[-1]
    figures["control_sorted_scan"] = _median_ms(control, repeat=3)
    return figures


def test_archive_reads_cost_the_same_at_10k_and_200k_documents(
    settings: Settings, db: Database
) -> None:
    archive_client.ensure_indexes_sync(db)
    _load(db, 0, SMALL)
    small = _measure(settings, db, SMALL, "small")
    _load(db, SMALL, LARGE)
    large = _measure(settings, db, LARGE, "large")
    # The back-fill labels a unit's cycles: 20x as many at 200 k (one unit is 1/80 of the
    # archive), so it is compared per cycle.
    for figures, size in ((small, SMALL), (large, LARGE)):
        figures["failure_backfill"] /= size // UNITS
    ratios = {name: large[name] / small[name] for name in small}
    report = {name: (round(small[name], 2), round(large[name], 2)) for name in small}
    assert ratios["control_sorted_scan"] > 5, f"the harness sees no scan: {report}"
    slow = {n: round(r, 2) for n, r in ratios.items() if r > MAX_RATIO and "control" not in n}
    assert not slow, f"reads that grew with the archive (ms at 10 k, 200 k): {report}"
