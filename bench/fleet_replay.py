"""Fleet replay (issue #27): turbofan units' full histories through POST /predict/turbofan/batch,
8 units at a time, until the archive holds `--docs` documents, on the embedded store.

Each call carries the next `--cycles-per-unit` cycles of each of the 8 active units (64 cycles a
call by default, in cycle order per unit); a unit's first call builds its serving state, a unit
that reaches its last cycle gets POST /assets/{unit}/failure (the back-fill), and the next unit
takes its place. The fleet is C-MAPSS FD001 + FD002 training units (360 histories), replayed
again under new unit ids until `--docs` cycles are archived. The archiving rate is reported per
slice of 10 k documents, so a rate that falls with the archive's size shows.

    python -m bench.fleet_replay [--docs 100000] [--replicas 1]

Writes docs/benchmarks/fleet_replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import secrets
import statistics
import time
import uuid
from collections import deque
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from bench._stack import bench_settings, stop
from bench.adaptation_turbofan import _items
from bench.provenance import provenance
from machine_health import embedded_store
from machine_health.domains.turbofan.data import load_subset
from tests.support.paths import DATA_DIR
from tests.support.servers import free_port, start_uvicorn
from tests.support.users import create_user

logger = logging.getLogger("bench.fleet_replay")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "fleet_replay.json"
USER = "replay"
SLICE = 10_000


def _fleet(settings: Any, docs: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(unit id, cycles) of FD001 + FD002 training units, repeated under new ids to `docs`."""
    histories = []
    for subset in ("FD001", "FD002"):
        train = load_subset(settings.data_dir, subset).train
        histories += [(f"{subset}-u{u:03d}", rows) for u, rows in train.groupby("unit")]
    fleet, total, rounds = [], 0, 0
    while total < docs:
        for name, rows in histories:
            unit = f"r{rounds}-{name}"
            fleet.append((unit, _items(unit, rows)))
            total += len(rows)
            if total >= docs:
                break
        rounds += 1
    return fleet


async def _replay(
    urls: list[str], token: str, fleet: list[tuple[str, list[dict]]], units: int, per_unit: int
) -> dict[str, Any]:
    """Replay `fleet` with `units` active units, `per_unit` cycles of each per call."""
    pending = deque(fleet)
    marks: list[tuple[int, float]] = [(0, time.perf_counter())]
    calls: list[float] = []
    failures: list[float] = []
    archived = 0
    headers = {"Authorization": f"Bearer {token}"}

    posts: list[asyncio.Task[None]] = []

    async def fail(client: httpx.AsyncClient, url: str, entry: list[Any]) -> None:
        started = time.perf_counter()
        done = await client.post(
            f"{url}/assets/{entry[0]}/failure",
            params={"domain": "turbofan"},
            json={"failure_cycle": entry[1][-1]["cycle"]},
        )
        failures.append(time.perf_counter() - started)
        if done.status_code != 200:
            raise RuntimeError(f"failure: {done.status_code} {done.text[:300]}")

    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        active: list[list[Any]] = []  # [unit id, items, next index]
        turn = 0
        while pending or active:
            while pending and len(active) < units:
                active.append([*pending.popleft(), 0])
            items = [it for _, its, i in active for it in its[i : i + per_unit]]
            url = urls[turn % len(urls)]
            turn += 1
            started = time.perf_counter()
            answer = await client.post(
                f"{url}/predict/turbofan/batch",
                json={"items": items},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            calls.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"batch: {answer.status_code} {answer.text[:300]}")
            outcomes = [i["archived"] for i in answer.json()["items"]]
            archived += sum(1 for o in outcomes if o in ("archived", "spooled"))
            if archived // SLICE > marks[-1][0] // SLICE:
                marks.append((archived, time.perf_counter()))
            for entry in active:
                entry[2] += per_unit
                if entry[2] >= len(entry[1]):  # maintenance reports it: telemetry goes on
                    posts.append(asyncio.create_task(fail(client, url, entry)))
            active = [a for a in active if a[2] < len(a[1])]
        await asyncio.gather(*posts)
    marks.append((archived, time.perf_counter()))
    slices = [
        {"docs_from": a, "docs_to": b, "cycles_per_s": round((b - a) / (tb - ta), 1)}
        for (a, ta), (b, tb) in itertools.pairwise(marks)
        if tb > ta and b > a
    ]
    seconds = marks[-1][1] - marks[0][1]
    ms = sorted(c * 1000 for c in calls)
    return {
        "cycles_archived": archived,
        "seconds": round(seconds, 1),
        "cycles_per_s": round(archived / seconds, 1),
        "per_slice": slices,
        # whole slices only: the last few cycles (units' tails, one call each) are no rate
        "slowest_slice_cycles_per_s": min(
            s["cycles_per_s"] for s in slices if s["docs_to"] - s["docs_from"] >= SLICE // 2
        ),
        "batch_calls": len(calls),
        "batch_call_ms_p50": round(statistics.median(ms), 1),
        "batch_call_ms_p99": round(ms[int(0.99 * (len(ms) - 1))], 1),
        "batch_call_ms_max": round(ms[-1], 1),
        "failure_posts": len(failures),
        "failure_post_ms_p50": round(statistics.median(failures) * 1000, 1) if failures else None,
        "failure_post_ms_max": round(max(failures) * 1000, 1) if failures else None,
    }


#: the API's own histograms whose means say where a batch call's time goes
_HISTOGRAMS = {
    "model_call_ms": "machine_health_prediction_latency_seconds",
    "archive_write_ms": "machine_health_archive_write_seconds",
}


def _server_means(url: str) -> dict[str, float | None]:
    """Mean ms of the replica's model calls and archive group commits (from /metrics)."""
    text = httpx.get(f"{url}/metrics").text
    means: dict[str, float | None] = {}
    for name, metric in _HISTOGRAMS.items():
        total = sum(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith(f"{metric}_sum"))  # fmt: skip
        count = sum(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith(f"{metric}_count"))  # fmt: skip
        means[name] = round(total / count * 1000, 2) if count else None
    return means


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.workflow import train_and_register

    port, password = free_port(), secrets.token_urlsafe(16)
    store = embedded_store.launch("127.0.0.1", port, work / "store", work / "store.log")
    replicas: list[Any] = []
    try:
        settings = bench_settings(port, work, "replay", data_dir=DATA_DIR)
        create_user(settings, USER, "operator", password)
        # The served ensemble, trained briefly: serving costs the same as a fully trained one.
        train_and_register(settings, config=FitConfig(epochs=2, patience=1))
        replicas = [start_uvicorn(settings, work / "logs", timeout_s=180)
                    for _ in range(args.replicas)]  # fmt: skip
        urls = [r.url for r in replicas]
        token = httpx.post(
            f"{urls[0]}/token", data={"username": USER, "password": password}
        ).json()["access_token"]
        fleet = _fleet(settings, args.docs)
        logger.info("replaying %d units (%d cycles)", len(fleet), sum(len(c) for _, c in fleet))
        result = asyncio.run(_replay(urls, token, fleet, args.units, args.cycles_per_unit))
        result["server"] = [_server_means(url) for url in urls]
    finally:
        stop(replicas, store)
    return {
        "units": len(fleet),
        "active_units": args.units,
        "cycles_per_unit_per_call": args.cycles_per_unit,
        "replicas": args.replicas,
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_replay", description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000, help="cycles to archive")
    parser.add_argument("--units", type=int, default=8, help="units replayed at a time")
    parser.add_argument("--cycles-per-unit", type=int, default=8, help="of each unit per call")
    parser.add_argument("--replicas", type=int, default=1, help="API replicas (uvicorn)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {OUT.name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with TemporaryDirectory(prefix="mh-replay-") as tmp:
        result = run(args, Path(tmp))
    result["provenance"] = provenance()
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))
    if not args.no_write:
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
