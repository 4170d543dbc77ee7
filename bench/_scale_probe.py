"""Where a serving-path figure of `bench/scale.py` spends its time: the store calls behind it,
timed one by one against an archive the benchmark left (`--work DIR`).

    .venv/bin/python -m bench._scale_probe DIR [--unit fd001-e000123]

Starts the store on DIR/store-data (its own port, log and pid file under DIR/probe/), reads
the `bench` database and times, each the median of a few runs:

- overview: reading a domain's counter documents (`archive_counters`) and summing them
  (`counters.overview`), with how many documents and fields they hold;
- back-fill: `labels.unit_cycles` of an engine (a range on cycle_key), the bulk relabel of its
  cycles by `_id` (`bulk_write` of UpdateOne), `counters.count_labels`;
- set_label: its `find_one` on prediction_id + domain, its `find_one_and_update` by `_id`;
- unit_history of an engine (the newest 30 cycles), a listing page (`find_page`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.api_load import _free_port
from machine_health import embedded_store
from machine_health.archive import counters, labels, predictions
from machine_health.archive.client import PREDICTIONS, async_client
from machine_health.archive.counters import COUNTERS
from machine_health.config import Settings


async def _timed(fn: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


async def _histories(db: Any, engines: int = 12) -> dict[str, Any]:
    """`unit_history` (30 newest cycles) of engines spread over the timeline: the first call
    (the store's pages of that unit may not be in memory) and the next (warm), ms."""
    first = await db[PREDICTIONS].find_one(
        {"domain_time_key": {"$gt": "turbofan/", "$lt": "turbofan/~"}},
        {"domain_time_key": 1},
        sort=[("domain_time_key", 1)],
    )
    last = await db[PREDICTIONS].find_one(
        {"domain_time_key": {"$gt": "turbofan/", "$lt": "turbofan/~"}},
        {"domain_time_key": 1},
        sort=[("domain_time_key", -1)],
    )
    low, high = (int(d["domain_time_key"].split("/")[1]) for d in (first, last))
    units = []
    for i in range(engines):
        at = low + (high - low) * (i + 0.5) / engines
        doc = await db[PREDICTIONS].find_one(
            {"domain_time_key": {"$gt": "turbofan/", "$lt": f"turbofan/{int(at):013d}"}},
            {"asset_id": 1},
            sort=[("domain_time_key", -1)],
        )
        units.append(str(doc["asset_id"]))
    cold, warm = [], []
    for unit in units:
        for times in (cold, warm):
            started = time.perf_counter()
            await predictions.unit_history(db, unit, 30, domain="turbofan")
            times.append((time.perf_counter() - started) * 1000)
    return {
        "engines": len(units),
        "first_call_ms_median": round(statistics.median(cold), 2),
        "first_call_ms_max": round(max(cold), 2),
        "second_call_ms_median": round(statistics.median(warm), 2),
    }


async def probe(settings: Settings, unit: str | None) -> dict[str, Any]:
    client = async_client(settings)
    db = client[settings.mongodb_db]
    out: dict[str, Any] = {}
    try:
        for domain in ("vibration", "turbofan"):
            rows = [r async for r in db[COUNTERS].find({"domain": domain})]
            out[f"counters_{domain}"] = {
                "documents": len(rows),
                "fields": sum(len(r) for r in rows),
                "read_ms": await _timed(
                    lambda d=domain: db[COUNTERS].find({"domain": d}).to_list()
                ),
                "overview_ms": await _timed(
                    lambda d=domain: counters.overview(db, d, rul_edges=[0.0, 10.0, 130.0])
                ),
            }
        if unit is None:
            doc = await db[PREDICTIONS].find_one(
                {"label_source": "failure"}, {"asset_id": 1}, sort=[("cycle_key", -1)]
            )
            unit = str(doc["asset_id"]) if doc else None
        if unit is not None:
            cycles = await labels.unit_cycles(db, "turbofan", unit)
            failure = {
                "domain": "turbofan",
                "failure_cycle": int(cycles[-1]["cycle"]) + 5,
                "source": "failure",
                "labelled_by": "probe",
            }
            out["backfill"] = {
                "unit": unit,
                "cycles": len(cycles),
                "unit_cycles_ms": await _timed(lambda: labels.unit_cycles(db, "turbofan", unit)),
                "bulk_relabel_ms": await _timed(
                    lambda: labels._label_cycles(db, cycles, failure), runs=3
                ),
                "unit_history_30_ms": await _timed(
                    lambda: predictions.unit_history(db, unit, 30, domain="turbofan")
                ),
            }
        out["unit_history_by_engine"] = await _histories(db)
        newest = await db[PREDICTIONS].find_one(
            {"domain_time_key": {"$gt": "vibration/", "$lt": "vibration/~"}},
            {"prediction_id": 1},
            sort=[("domain_time_key", -1)],
        )
        pid = str(newest["prediction_id"])
        out["set_label"] = {
            "find_one_pid_domain_ms": await _timed(
                lambda: db[PREDICTIONS].find_one(
                    {"prediction_id": pid, "domain": "vibration"}, {"_id": 1}
                )
            ),
            "find_one_pid_ms": await _timed(
                lambda: db[PREDICTIONS].find_one({"prediction_id": pid}, {"_id": 1})
            ),
            "find_one_id_ms": await _timed(lambda: db[PREDICTIONS].find_one({"_id": pid})),
        }
        out["listing_page_ms"] = await _timed(
            lambda: predictions.find_page(db, domains=["turbofan"], limit=50)
        )
    finally:
        await client.close()
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._scale_probe", description=__doc__)
    parser.add_argument("work", type=Path, help="The --work folder of a bench.scale run.")
    parser.add_argument("--unit", default=None, help="A turbofan unit (default: a labelled one).")
    args = parser.parse_args(argv)
    port = _free_port()
    store = embedded_store.launch(
        "127.0.0.1",
        port,
        args.work / "store-data",
        args.work / "probe" / "store.log",
        timeout_s=120,
    )
    try:
        from bench._stack import bench_settings

        settings = bench_settings(port, args.work / "probe" / "var")
        print(json.dumps(asyncio.run(probe(settings, args.unit)), indent=1))
    finally:
        store.terminate()
        store.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
