"""Retraining cycle benchmark: every step and the whole cycle, per domain and archive size.

    .venv/bin/python -m bench pipeline                       # both domains, 10k and 100k
    .venv/bin/python -m bench.pipeline --domain vibration --sizes 10000

For each case: a fresh embedded store (in memory) and MLflow store under a temporary var/, a
champion trained by the domain's own `train_and_register`, N archived labelled predictions
bulk-inserted from REAL data (CWRU training-portion windows of 2048 samples, labelled;
C-MAPSS FD002 run-to-failure cycles with their true RUL, units replayed under new ids until N),
two real API replicas (uvicorn), then every step of `machine_health.pipeline` in order. Extract
throughput = documents/s; convergence = PUT /reload on both replicas until both report the new
version. Results: docs/benchmarks/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench._stack import bench_settings, stop
from machine_health import embedded_store
from machine_health.archive.client import PREDICTIONS, ensure_indexes_sync
from machine_health.archive.records import encode_samples
from machine_health.config import Settings
from machine_health.pipeline import STEPS, step_function
from tests.support.paths import DATA_DIR
from tests.support.servers import free_port, start_uvicorn

logger = logging.getLogger("bench.pipeline")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "pipeline.json"
TARGETS_S = {"turbofan": 600.0, "vibration": 180.0}
INSERT_BATCH = 2000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _doc(domain: str, asset: str, cycle: int | None, data: dict, label: Any, i: int) -> dict:
    created = T0 + timedelta(milliseconds=i)
    return {
        "prediction_id": uuid.uuid4().hex, "idempotency_key": None, "domain": domain,
        "asset_id": asset, "cycle": cycle, "input": data, "output": {},
        "model_name": f"machine-health-{domain}", "model_version": "1", "model_alias": "champion",
        "user": "bench", "request_id": uuid.uuid4().hex, "latency_ms": 1.0, "created_at": created,
        "schema_version": 1, "label": label, "labelled_at": created + timedelta(hours=1),
        "label_source": "feedback" if domain == "vibration" else "failure",
    }  # fmt: skip


def vibration_docs(settings: Settings, n: int) -> Any:
    from machine_health.domains.vibration import workflow

    # The training portion only: the test portion is the gate's held-out set (and the
    # evaluate step refuses to score on windows the archive holds).
    windows = workflow.load_portion(settings.data_dir, "train", hop=workflow.WINDOW)
    for i in range(n):
        k = i % len(windows)
        data = {"asset_id": "cwru", "samples": encode_samples(windows.windows[k]),
                "sample_rate": windows.sample_rate, "rpm": float(windows.rpm[k]),
                "channel": "accelerometer", "n_samples": workflow.WINDOW}  # fmt: skip
        asset = f"cwru-{Path(str(windows.sources[k])).stem}".replace("@", "-")[:64]
        yield _doc("vibration", asset, None, data, str(windows.labels[k]), i)


def turbofan_docs(settings: Settings, n: int) -> Any:
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    train = load_subset(settings.data_dir, "FD002").train
    last = train.groupby("unit")["cycle"].transform("max")
    rows = train.assign(rul=last - train["cycle"]).to_dict("records")
    for i in range(n):
        row = rows[i % len(rows)]
        unit = f"FD002-r{i // len(rows)}-{int(row['unit'])}"
        data = {"unit_id": unit, "cycle": int(row["cycle"]),
                "settings": [float(row[c]) for c in SETTINGS],
                "sensors": [float(row[c]) for c in SENSORS]}  # fmt: skip
        yield _doc("turbofan", unit, int(row["cycle"]), data, float(row["rul"]), i)


def insert(settings: Settings, domain: str, n: int) -> float:
    docs = vibration_docs(settings, n) if domain == "vibration" else turbofan_docs(settings, n)
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    started = time.perf_counter()
    try:
        coll = client[settings.mongodb_db][PREDICTIONS]
        ensure_indexes_sync(client[settings.mongodb_db])
        batch = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= INSERT_BATCH:
                coll.insert_many(batch, ordered=False)
                batch = []
        if batch:
            coll.insert_many(batch, ordered=False)
    finally:
        client.close()
    return time.perf_counter() - started


def train_champion(settings: Settings, domain: str) -> str:
    if domain == "vibration":
        from machine_health.domains.vibration.workflow import train_and_register

        return str(train_and_register(settings)["version"])
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.workflow import train_and_register as train_turbofan

    config = FitConfig(epochs=settings.retrain_epochs, patience=10)
    return str(
        train_turbofan(settings, model_name=settings.retrain_turbofan_model, config=config)[
            "version"
        ]
    )


def run_case(domain: str, n: int, var: Path) -> dict[str, Any]:
    port = free_port()
    store = embedded_store.launch("127.0.0.1", port, embedded_store.MEMORY, var / "store.log")
    replicas = []
    try:
        settings = bench_settings(
            port, var, data_dir=DATA_DIR, retrain_min_new_labels=1, reload_timeout_s=120
        )
        champion = train_champion(settings, domain)
        insert_s = insert(settings, domain, n)
        replicas = [start_uvicorn(settings, var / "logs", timeout_s=180) for _ in range(2)]
        settings = settings.model_copy(update={"serving_urls": [r.url for r in replicas]})
        keys = {"settings": settings, "domain": domain, "run_id": f"bench-{domain}-{n}",
                "interval_start": T0.isoformat(),
                "interval_end": (T0 + timedelta(days=30)).isoformat()}  # fmt: skip
        steps: dict[str, float] = {}
        results: dict[str, dict] = {}
        for step in STEPS:
            started = time.perf_counter()
            results[step] = step_function(step)(**keys, force=step == "check")
            steps[step] = round(time.perf_counter() - started, 2)
        cycle = round(sum(steps.values()), 1)
        reload = results["reload"]
        return {
            "domain": domain, "archived": n, "champion": champion,
            "insert_docs_per_s": round(n / insert_s), "steps_s": steps, "cycle_s": cycle,
            "cycle_target_s": TARGETS_S[domain],
            "extract_docs_per_s": results["extract"]["docs_per_s"],
            "gate_passed": results["evaluate"]["passed"],
            "challenger": results["evaluate"]["challenger"],
            "champion_metrics": results["evaluate"]["champion"],
            "reload_convergence_s": reload.get("convergence_s"),
            "reload_replicas_s": reload.get("replicas"),
            "training_facts": {k: v for k, v in results["rescale"].items()
                               if k.startswith(("archived", "base"))},
        }  # fmt: skip
    finally:
        stop(replicas, store)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", action="append", choices=["vibration", "turbofan"])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    args = parser.parse_args(argv)
    cases = []
    for domain in args.domain or ["vibration", "turbofan"]:
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix="mh-bench-pipeline-") as tmp:
                case = run_case(domain, n, Path(tmp))
            logger.info("%s", json.dumps(case))
            cases.append(case)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {"cases": []}
    done = {(c["domain"], c["archived"]) for c in cases}
    kept = [c for c in previous["cases"] if (c["domain"], c["archived"]) not in done]
    OUT.write_text(json.dumps({"measured": datetime.now(UTC).isoformat(),
                               "cases": kept + cases}, indent=2))  # fmt: skip


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
