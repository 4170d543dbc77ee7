"""Archive scale benchmark (issue #27): the serving path and the extract at 10 k, 100 k and 1 M
archived predictions.

    .venv/bin/python -m bench scale                                   # 10 k, 100 k, 1 M
    .venv/bin/python -m bench.scale --sizes 2000,20000 --no-write     # smoke run (~3 min)
    .venv/bin/python -m bench.scale --sizes 10000,100000,1000000 [--tracking-uri URI]
                                    [--work DIR] [--keep] [--no-write]

ONE embedded store (nx-27017 on SQLite, its own data dir, pid file, log and port), grown in
place: loaded to the first size, measured, grown to the next, measured... The documents are a
plant's predictions built from real data (bench/_scale_data.py: 100 motors with CWRU windows,
150 engine slots with C-MAPSS FD001 histories, 69.9 % vibration by count, ~17 % labelled), bulk
loaded through the repository: `PredictionRecord(...).to_document()` (with `label_key` for the
labelled ones, as the label writers set it), `insert_many` in chunks of 2000 into a store whose
indexes `ensure_indexes_sync` created, and `counters.count_inserted` (async client) for every
chunk: the counters stay exact without a `rebuild` (a full read at 1 M).

At every size, against a real uvicorn API (started for the size, on that store; models trained
once with the test suite's fast settings unless `--tracking-uri` names a registry with
@champion versions), each figure after a warm-up, one request at a time:

  new_unit          POST /predict/turbofan, cycle 1 of a NEW unit (its state built from the
                    archive: `unit_history` finds nothing), >= 30 units
  archived_unit     the next cycle of a running archived engine, this replica's first request for
                    it (state built from its archived cycles: `unit_history`), >= 30 units
  known_unit        the next cycles of units the API already knows, >= 100 requests
  listing_*         GET /predictions?domain=turbofan&limit=50: first page; 25 pages following
                    `next_cursor`; 25 pages from a cursor in the middle of the archive; one
                    engine's pages (asset_id); one motor's pages (vibration, 8 KiB windows)
  backfill          POST /assets/{unit}/failure on 12 units of 200 archived cycles each
  overview          GET /stats/overview all-time (counters) and over the archive's newest hour
  vibration_predict POST /predict/vibration (a real CWRU window), for reference
  extract           vibration: a full extract (it sets the checkpoint), then 10 k more rows
                    labelled with `labels.set_label` (the newest unlabelled windows; fewer when
                    the archive holds fewer), the incremental extract (seconds, rows read: the
                    new labels and those of the 10 minutes before the checkpoint, OVERLAP, which
                    may hold the previous size's), and a full extract of the same interval

Writes docs/benchmarks/scale.json (after every size: an interrupted run keeps what it measured)
with `provenance()`, the mix, the load rates and the ratios largest/smallest size per serving
figure (target: each <= 2). Does not touch docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import _scale_data as data
from bench._stack import bench_settings
from bench.api_load import _free_port, _start_api, _token
from bench.provenance import provenance
from machine_health import embedded_store
from machine_health.archive import keys, labels
from machine_health.archive.client import async_client, open_db
from machine_health.config import Settings

logger = logging.getLogger("bench.scale")
REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "docs" / "benchmarks" / "scale.json"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
NEW_LABELS = 10_000
BACKFILL_UNITS = 12
NEW_UNITS = 36
PAGES = 25

#: the figures the target holds to (largest / smallest size <= 2): (name, key path)
SERVING = [
    ("new unit first request p50", ("new_unit", "p50")),
    ("new unit first request p99", ("new_unit", "p99")),
    ("archived unit first request p50", ("archived_unit", "p50")),
    ("archived unit first request p99", ("archived_unit", "p99")),
    ("known unit request p50", ("known_unit", "p50")),
    ("known unit request p99", ("known_unit", "p99")),
    ("listing first page p50", ("listing_first_page", "p50")),
    ("listing next pages p50/page", ("listing_next_pages", "p50")),
    ("listing deep pages p50/page", ("listing_deep_pages", "p50")),
    ("listing one engine p50/page", ("listing_engine_pages", "p50")),
    ("listing one motor p50/page", ("listing_motor_pages", "p50")),
    ("failure back-fill p50", ("backfill", "p50")),
    ("failure back-fill per cycle", ("backfill", "per_cycle_ms")),
    ("overview all-time p50", ("overview_all_time", "p50")),
    ("overview newest hour p50", ("overview_hour", "p50")),
    ("vibration predict p50", ("vibration_predict", "p50")),
    ("feedback label (set_label) per label", ("labelling", "ms_per_label")),
]


def _stats(ms: list[float]) -> dict[str, Any]:
    values = np.asarray(ms, dtype=float)
    return {
        "n": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 2),
        "p99": round(float(np.percentile(values, 99)), 2),
        "max": round(float(values.max()), 2),
    }


class Api:
    """A sync client of one API, timing every call (ms)."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
        started = time.perf_counter()
        response = self.http.request(method, path, **kwargs)
        ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return ms, response.json()

    def close(self) -> None:
        self.http.close()


def _cycle_body(unit: str, cycle: int, row: tuple[list[float], list[float]]) -> dict[str, Any]:
    return {"unit_id": unit, "cycle": cycle, "settings": row[0], "sensors": row[1]}


# --- the measurements of one size -----------------------------------------------------------
def _turbofan(api: Api, plant: data.Plant, size: int) -> dict[str, Any]:
    rows = plant.fd001[0]
    # warm-up: a few new units, their second cycle (model graphs, connections, caches)
    for i in range(4):
        unit = f"warm-{size}-{i}"
        api.call("POST", "/predict/turbofan", json=_cycle_body(unit, 1, rows[0]))
        api.call("POST", "/predict/turbofan", json=_cycle_body(unit, 2, rows[1]))
    new_units = [f"new-{size}-{i:03d}" for i in range(NEW_UNITS)]
    first = [
        api.call("POST", "/predict/turbofan", json=_cycle_body(u, 1, rows[0]))[0] for u in new_units
    ]
    known = []
    for cycle in (2, 3, 4):
        for unit in new_units:
            body = _cycle_body(unit, cycle, rows[cycle - 1])
            known.append(api.call("POST", "/predict/turbofan", json=body)[0])
    # running archived engines this replica never saw: its first request reads their cycles
    engines = plant.active_units()[:NEW_UNITS]
    archived: list[float] = []
    read: list[int] = []
    had = [engine.next_cycle - 1 for engine in engines]
    for engine in engines:
        cycle = engine.next_cycle  # the engine's next cycle (the bulk load stopped before it)
        engine.next_cycle += 1  # the next size's load goes on after it
        row = engine.rows[cycle - 1]
        ms, out = api.call(
            "POST", "/predict/turbofan", json=_cycle_body(engine.unit_id, cycle, row)
        )
        archived.append(ms)
        read.append(int(out["prediction"]["cycles_in_window"]))
    return {
        "new_unit": _stats(first),
        "known_unit": _stats(known),
        "archived_unit": {
            **(_stats(archived) if archived else {"n": 0}),
            "archived_cycles_mean": round(float(np.mean(had)), 1) if had else None,
            "cycles_in_window_mean": round(float(np.mean(read)), 1) if read else None,
        },
    }


def _pages(api: Api, params: dict[str, Any], n: int, cursor: str | None = None) -> dict[str, Any]:
    times, items = [], 0
    for _ in range(n):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        ms, page = api.call("GET", "/predictions", params=query)
        times.append(ms)
        items += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return {**_stats(times), "items": items}


def _listing(api: Api, plant: data.Plant, subject: str) -> dict[str, Any]:
    base = {"domain": "turbofan", "limit": 50}
    for _ in range(3):
        api.call("GET", "/predictions", params=base)
    first = [api.call("GET", "/predictions", params=base)[0] for _ in range(20)]
    middle = (plant.t0_ms + plant.last_created_ms) // 2
    deep_cursor = f"{keys.ms_text(middle)}/{'f' * 32}"
    return {
        "listing_first_page": _stats(first),
        "listing_next_pages": _pages(api, base, PAGES),
        "listing_deep_pages": {
            **_pages(api, base, PAGES, deep_cursor),
            "from": datetime.fromtimestamp(middle / 1000, UTC).isoformat(),
        },
        "listing_engine_pages": {
            **_pages(api, {**base, "asset_id": subject}, PAGES),
            "asset_id": subject,
        },
        "listing_motor_pages": {
            **_pages(api, {"domain": "vibration", "asset_id": "motor-042", "limit": 50}, 10),
            "asset_id": "motor-042",
        },
    }


def _backfill(api: Api, subjects: list[str]) -> dict[str, Any]:
    times, cycles = [], []
    for unit in subjects:
        ms, out = api.call(
            "POST",
            f"/assets/{unit}/failure",
            params={"domain": "turbofan"},
            json={"failure_cycle": data.SUBJECT_CYCLES + 5},
        )
        times.append(ms)
        cycles.append(int(out["labelled"]))
    stats = _stats(times)
    return {
        **stats,
        "units": len(subjects),
        "cycles_per_unit": round(float(np.mean(cycles)), 1),
        "per_cycle_ms": round(stats["p50"] / max(float(np.mean(cycles)), 1.0), 3),
    }


def _overview(api: Api, plant: data.Plant) -> dict[str, Any]:
    for _ in range(3):
        api.call("GET", "/stats/overview")
    all_time = [api.call("GET", "/stats/overview")[0] for _ in range(15)]
    end = datetime.fromtimestamp((plant.last_created_ms + 1) / 1000, UTC)
    window = {"since": (end - timedelta(hours=1)).isoformat(), "until": end.isoformat()}
    _, out = api.call("GET", "/stats/overview", params=window)  # warm-up
    hour = [api.call("GET", "/stats/overview", params=window)[0] for _ in range(8)]
    totals = {d: v.get("total") for d, v in out["domains"].items()}
    _, whole = api.call("GET", "/stats/overview")
    return {
        "overview_all_time": {
            **_stats(all_time),
            "totals": {d: v.get("total") for d, v in whole["domains"].items()},
            "labelled": {d: v.get("labelled") for d, v in whole["domains"].items()},
        },
        "overview_hour": {**_stats(hour), "rows": totals},
    }


def _vibration(api: Api, plant: data.Plant) -> dict[str, Any]:
    times = []
    for i in range(45):
        k = (i * 31) % len(plant.windows)
        body = {
            "asset_id": f"motor-{i % data.MOTORS:03d}",
            "samples": [float(x) for x in plant.windows[k]],
            "sample_rate": plant.sample_rate,
            "rpm": plant.window_rpm[k],
            "channel": "accelerometer",
        }
        ms, _ = api.call("POST", "/predict/vibration", json=body)
        if i >= 5:
            times.append(ms)
    return {"vibration_predict": _stats(times)}


async def _label(settings: Settings, todo: list[tuple[str, str]]) -> float:
    """`set_label` on every (prediction_id, class), 8 at a time; seconds."""
    client = async_client(settings)
    db = client[settings.mongodb_db]
    gate = asyncio.Semaphore(8)

    async def one(pid: str, label: str) -> None:
        async with gate:
            await labels.set_label(
                db,
                pid,
                domain="vibration",
                label=label,
                source="feedback",
                labelled_by="scale-bench",
            )

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(pid, label) for pid, label in todo))
    finally:
        await client.close()
    return time.perf_counter() - started


def _run_extract(settings: Settings, run_id: str, end: datetime) -> dict[str, Any]:
    from machine_health.pipeline import extract

    started = time.perf_counter()
    result = extract.run(
        settings=settings,
        domain="vibration",
        run_id=run_id,
        interval_start=(end - timedelta(days=1)).isoformat(),
        interval_end=end.isoformat(),
    )
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 2),
        "seconds": result.get("seconds"),
        "mode": result.get("mode"),
        "rows": result.get("rows"),
        "rows_read": result.get("new_rows"),
        "labelled_after_end": result.get("labelled_after_end"),
        "full_because": result.get("full_because"),
    }


def _reset_checkpoint(settings: Settings) -> None:
    from machine_health.pipeline import checkpoint

    with open_db(settings) as db:
        checkpoint.reset(db, "vibration")


def _extract(settings: Settings, plant: data.Plant, size: int) -> dict[str, Any]:
    """Full extract (sets the checkpoint), label the newest unlabelled windows, incremental
    extract, then a full one of the same interval."""
    shutil.rmtree(settings.runs_dir, ignore_errors=True)  # the previous size's snapshots
    # the bulk load wrote label times before an earlier size's checkpoint: start afresh
    _reset_checkpoint(settings)
    base = _run_extract(settings, f"scale-{size}-base", datetime.now(UTC))
    todo = list(plant.unlabelled_vibration)[-NEW_LABELS:]
    for _ in todo:
        plant.unlabelled_vibration.pop()
    label_s = asyncio.run(_label(settings, todo))
    time.sleep(0.01)
    end = datetime.now(UTC) + timedelta(seconds=1)
    incremental = _run_extract(settings, f"scale-{size}-incremental", end)
    _reset_checkpoint(settings)
    full = _run_extract(settings, f"scale-{size}-full", end)
    shutil.rmtree(settings.runs_dir, ignore_errors=True)
    return {
        "labelling": {
            "labels": len(todo),
            "seconds": round(label_s, 2),
            "ms_per_label": round(1000 * label_s / max(len(todo), 1), 3),
            "concurrency": 8,
        },
        "extract": {
            "domain": "vibration",
            "new_labels": len(todo),
            "checkpoint_extract": base,
            "incremental": incremental,
            "full": full,
            "incremental_s_per_1k_rows_read": round(
                1000 * incremental["wall_s"] / max(incremental["rows_read"] or 0, 1), 3
            ),
        },
    }


def measure(
    settings: Settings, plant: data.Plant, size: int, subjects: list[str], work: Path
) -> dict[str, Any]:
    api_proc, url = _start_api(settings, work / f"api-{size}.log", set(os.sched_getaffinity(0)))
    api = Api(url, _token(settings, url, username=f"scale{size}"))
    out: dict[str, Any] = {}
    phases = [
        ("turbofan", lambda: _turbofan(api, plant, size)),
        ("listing", lambda: _listing(api, plant, subjects[0])),
        ("overview", lambda: _overview(api, plant)),
        ("vibration", lambda: _vibration(api, plant)),
        ("backfill", lambda: {"backfill": _backfill(api, subjects)}),
    ]
    try:
        for name, phase in phases:
            started = time.perf_counter()
            try:
                out |= phase()
            except Exception as exc:  # keep the other figures of the size
                logger.exception("size %d: %s failed", size, name)
                out[f"{name}_error"] = repr(exc)[:500]
            logger.info("size %d: %s in %.1f s", size, name, time.perf_counter() - started)
    finally:
        api.close()
        api_proc.terminate()
        api_proc.wait(30)
    started = time.perf_counter()
    try:
        out |= _extract(settings, plant, size)
    except Exception as exc:
        logger.exception("size %d: extract failed", size)
        out["extract_error"] = repr(exc)[:500]
    logger.info("size %d: extract in %.1f s", size, time.perf_counter() - started)
    return out


# --- output ---------------------------------------------------------------------------------
def _get(stage: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = stage.get(path[0], {})
    return value.get(path[1]) if isinstance(value, dict) else None


def ratios(stages: list[dict[str, Any]]) -> dict[str, Any]:
    if len(stages) < 2:
        return {}
    small, large = stages[0], stages[-1]
    out = {}
    for name, path in SERVING:
        a, b = _get(small, path), _get(large, path)
        if a and b is not None:
            out[name] = {"small": a, "large": b, "ratio": round(b / a, 2), "met": b / a <= 2.0}
    return {"of": f"{large['size']} / {small['size']} documents", "target": "<= 2", **out}


def table(result: dict[str, Any]) -> str:
    stages = result["stages"]
    head = "| figure | " + " | ".join(f"{s['size']:,}" for s in stages) + " | ratio |"
    lines = [head, "|---|" + "---:|" * (len(stages) + 1)]
    rat = result.get("ratios", {})
    for name, path in SERVING:
        cells = [_get(s, path) for s in stages]
        r = rat.get(name, {}).get("ratio")
        lines.append(
            f"| {name} ms | "
            + " | ".join("-" if c is None else f"{c:g}" for c in cells)
            + f" | {'-' if r is None else r} |"
        )
    for label, key in (
        ("extract incremental s", "incremental"),
        ("extract full s", "full"),
        ("extract checkpoint (full) s", "checkpoint_extract"),
    ):
        cells = [s.get("extract", {}).get(key, {}) for s in stages]
        lines.append(
            f"| {label} (rows read) | "
            + " | ".join(f"{c.get('wall_s')} ({c.get('rows_read')})" if c else "-" for c in cells)
            + " | |"
        )
    lines.append(
        "| load docs/s (stage) | "
        + " | ".join(f"{s['load']['docs_per_s']:g}" for s in stages)
        + " | |"
    )
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    load_before = list(os.getloadavg())
    work = Path(args.work or tempfile.mkdtemp(prefix="mh-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    store = embedded_store.launch("127.0.0.1", port, work / "store-data", work / "store.log")
    result: dict[str, Any] = {}
    try:
        tracking = args.tracking_uri
        if tracking is None:
            from tests.support.models import train_small_models

            logger.info("training the models (test-suite fast settings)")
            tracking = train_small_models(work / "models" / "var").tracking_uri
        settings = bench_settings(
            port, work / "var", mlflow_tracking_uri=tracking, log_level="WARNING"
        )
        with open_db(settings):  # indexes (and the one-off upgrade marker) on the empty store
            pass
        end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        plant = data.build_plant(settings, sizes[-1], end)
    except Exception:
        store.terminate()
        raise
    files = _data_files(settings)
    import machine_health

    result = {
        "provenance": provenance(
            data=files,
            sizes=sizes,
            store=f"nx-27017 on SQLite, data dir {work / 'store-data'}",
            # the code measured when it is not the checkout's (PYTHONPATH=<a `git archive` of a
            # commit>/src: other work in the checkout cannot change it between sizes)
            machine_health_from=str(Path(machine_health.__file__).parent),
            code_commit=os.environ.get("MH_BENCH_CODE_COMMIT"),
        ),
        "load_average_before": load_before,
        "mix": data.MIX,
        "timeline": {
            "start": datetime.fromtimestamp(plant.t0_ms / 1000, UTC).isoformat(),
            "end_of_largest": end.isoformat(),
        },
        "stages": [],
        "complete": False,
    }
    try:
        for size in sizes:
            subjects = plant.add_subjects(BACKFILL_UNITS)
            logger.info("size %d: loading %d documents", size, size - plant.emitted)
            load = data.grow(settings, plant, size - plant.emitted)
            logger.info("size %d: loaded %s", size, load)
            stage = {
                "size": size,
                "archive": {
                    "by_domain": dict(plant.by_domain),
                    "labelled": dict(plant.labelled),
                    "store_bytes": _du(work / "store-data"),
                },
                "load": load,
                "load_average_1m_5m_15m": list(os.getloadavg()),
            }
            stage |= measure(settings, plant, size, subjects, work)
            stage["load_average_after_1m_5m_15m"] = list(os.getloadavg())
            result["stages"].append(stage)
            result["ratios"] = ratios(result["stages"])
            result["complete"] = size == sizes[-1]
            print(table(result), flush=True)
            if not args.no_write:
                write(result, args.out)
    finally:
        store.terminate()
        store.wait(30)
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _data_files(settings: Settings) -> list[Path]:
    from machine_health.domains.turbofan.data import find_file, resolve_cmapss_dir

    cmapss = resolve_cmapss_dir(settings.data_dir)
    return [find_file(cmapss, "train_FD001"), settings.data_dir / "cwru"]


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str]) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=lambda t: [int(x) for x in t.split(",")],
        default=list(DEFAULT_SIZES),
        help="Archive sizes, comma-separated.",
    )
    parser.add_argument("--tracking-uri", default=None, help="Registry with @champion models.")
    parser.add_argument("--work", default=None, help="Work folder (kept); default: a temp one.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary work folder.")
    parser.add_argument("--out", type=Path, default=OUT_JSON, help="The JSON written.")
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args(argv)
    result = run(args)
    logger.info("\n%s", table(result))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    main(sys.argv[1:])
