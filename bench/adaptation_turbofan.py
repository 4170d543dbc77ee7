"""The turbofan half of `bench.adaptation`: an FD001 champion meets the FD002 fleet.

1. a fresh embedded store (own pid file, under the work dir) and MLflow store; the champion
   trained on FD001 by the product's train-and-register (`bench.pipeline.train_champion`);
2. FD002 TRAINING units replayed to failure through real uvicorn replicas: every cycle through
   POST /predict/turbofan/batch (one next cycle of each of a worker's active units per call),
   then POST /assets/{unit}/failure at the last cycle, as the demo traffic labels a unit;
3. ONE retrain: `machine_health.pipeline.STEPS` in order (gate, register, reload included);
4. last-cycle RMSE / PHM08 on test_FD002 and test_FD001 (`training.evaluate_bundle`) of the
   champion (before), the promoted version loaded from the registry (after) and a model trained
   on FD002 by the same code and settings (direct); the first `--api-test-units` FD002 test units
   are also replayed through the reloaded API, whose last-cycle answers must match (after).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench._stack import bench_settings, stop
from machine_health import embedded_store, registry
from machine_health.config import Settings
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, find_file, load_subset
from machine_health.domains.turbofan.data import resolve_cmapss_dir as cmapss_dir
from machine_health.pipeline import STEPS, step_function
from tests.support.paths import DATA_DIR
from tests.support.servers import free_port, start_uvicorn
from tests.support.users import create_user

logger = logging.getLogger("bench.adaptation.turbofan")
DOMAIN = "turbofan"
USER = "adaptation"
RETRIES = 10
STORE_TIMEOUT_MS = 30_000
FILES = ("train_FD001", "test_FD001", "RUL_FD001", "train_FD002", "test_FD002", "RUL_FD002")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("turbofan")
    group.add_argument(
        "--units",
        type=int,
        default=None,
        help="replay N FD002 training units (every k-th by id); default all 260",
    )
    group.add_argument("--replicas", type=int, default=2, help="API replicas (uvicorn)")
    group.add_argument("--workers", type=int, default=4, help="concurrent replay clients")
    group.add_argument(
        "--units-per-call",
        type=int,
        default=16,
        help="active units per worker: one cycle of each per batch call",
    )
    group.add_argument(
        "--api-test-units",
        type=int,
        default=259,
        help="FD002 test units replayed through the reloaded API",
    )
    group.add_argument("--model", default=None, help="turbofan model (default: the retrain's)")
    group.add_argument("--epochs", type=int, default=None, help="Keras epochs (default: retrain's)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _items(unit_id: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """A unit's cycles as API bodies, in cycle order (what demo.py sends one by one)."""
    rows = rows.sort_values("cycle")
    columns = rows["cycle"].to_numpy(), rows[SETTINGS].to_numpy(), rows[SENSORS].to_numpy()
    return [{"unit_id": unit_id, "cycle": int(c), "settings": s.tolist(), "sensors": x.tolist()}
            for c, s, x in zip(*columns, strict=True)]  # fmt: skip


async def _login(client: httpx.AsyncClient, password: str) -> None:
    answer = await client.post("/token", data={"username": USER, "password": password})
    answer.raise_for_status()
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"


async def _post(client: httpx.AsyncClient, path: str, tally: Counter[str], **kw: Any) -> Any:
    """POST, retried on 503 (the API's "store busy or down, try again"; a first full run lost a
    failure post to one) with the same body and Idempotency-Key, so a retry never scores twice."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    for attempt in range(RETRIES):
        answer = await client.post(path, headers=headers, **kw)
        if answer.status_code != 503 or attempt == RETRIES - 1:
            break
        tally["retries_503"] += 1
        logger.warning("%s: 503 %s; retrying", path, answer.text[:200])
        await asyncio.sleep(min(2.0 * (attempt + 1), 10.0))
    if answer.status_code != 200:
        raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    return answer.json()


async def _fail(client: httpx.AsyncClient, unit_id: str, last_cycle: int, tally: Counter) -> None:
    """A training unit's series ends at its failure (RUL 0 there): post it, as the demo does."""
    path, body = f"/assets/{unit_id}/failure", {"failure_cycle": last_cycle}
    await _post(client, path, tally, params={"domain": DOMAIN}, json=body)


async def _replay(urls: list[str], password: str, units: list[tuple[str, list[dict]]],
                  workers: int, per_call: int, failures: bool) -> dict[str, Any]:  # fmt: skip
    """Send every unit's cycles in order through the batch route; post each failure (if
    `failures`: the unit ran to failure) once its last cycle is archived. Units are taken from
    one queue in order, so the last ones to fail are the last in the list."""
    pending = deque(units)
    last: dict[str, float] = {}  # unit id -> the API's RUL at its last cycle
    tally: Counter[str] = Counter()

    async def worker(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            await _login(client, password)
            active: list[list[Any]] = []  # [unit id, items, next index]
            while pending or active:
                while pending and len(active) < per_call:
                    active.append([*pending.popleft(), 0])
                body = {"items": [items[i] for _, items, i in active]}
                answer = await _post(client, f"/predict/{DOMAIN}/batch", tally, json=body)
                tally["cycles"] += len(body["items"])
                for entry, out in zip(active, answer["items"], strict=True):
                    entry[2] += 1
                    if entry[2] == len(entry[1]):
                        last[entry[0]] = float(out["prediction"]["rul"])
                        if failures:
                            await _fail(client, entry[0], entry[1][-1]["cycle"], tally)
                            tally["failures"] += 1
                active = [a for a in active if a[2] < len(a[1])]

    started = time.perf_counter()
    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(workers)))
    seconds = time.perf_counter() - started
    return {"units": len(units), "cycles": tally["cycles"], "failures_posted": tally["failures"],
            "seconds": round(seconds, 1), "cycles_per_s": round(tally["cycles"] / seconds, 1),
            "retries_503": tally["retries_503"], "last_rul": last}  # fmt: skip


def _scores(bundle: Any, data: Any) -> dict[str, float]:
    from machine_health.domains.turbofan.training import evaluate_bundle

    metrics = evaluate_bundle(bundle, data.test, data.rul)
    return {"rmse": round(metrics["rmse"], 3), "phm08": round(metrics["phm_score"], 1)}


def _direct(settings: Settings, model: str) -> tuple[Any, float]:
    """FD002 trained directly: the retrain's code, model, fit configuration and seed."""
    from machine_health.domains.turbofan.retrain import fit_config
    from machine_health.domains.turbofan.training import train_bundle
    from machine_health.pipeline.rescale import SEED

    train = load_subset(settings.data_dir, "FD002").train
    started = time.perf_counter()
    fit = train_bundle(settings, train, model_name=model, seed=SEED, config=fit_config(settings))
    return fit.bundle, time.perf_counter() - started


def _served(urls: list[str]) -> dict[str, str | None]:
    out = {}
    for url in urls:
        model = httpx.get(f"{url}/version", timeout=10).json()["models"].get(DOMAIN)
        out[url] = model and str(model["version"])
    return out


def _gate_rows(report: Path) -> list[dict[str, Any]]:
    import json

    keys = ("slice", "metric", "better", "champion", "challenger", "difference", "interval",
            "n_groups", "passed", "verdict")  # fmt: skip
    return [{k: r.get(k) for k in keys} for r in json.loads(report.read_text())["metrics"]]


def _retrain(settings: Settings, since: datetime) -> tuple[dict[str, dict], dict[str, float]]:
    """Every pipeline step once, in order, as bench/pipeline.py `run_case` runs them."""
    keys = {"settings": settings, "domain": DOMAIN, "run_id": f"adaptation-{secrets.token_hex(3)}",
            "interval_start": since.isoformat(),
            "interval_end": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}  # fmt: skip
    results, seconds = {}, {}
    for name in STEPS:
        started = time.perf_counter()
        results[name] = step_function(name)(**keys, force=name == "check")
        seconds[name] = round(time.perf_counter() - started, 2)
        logger.info("step %s: %.1fs", name, seconds[name])
    return results, seconds


def _subset_units(train: pd.DataFrame, n: int | None) -> list[int]:
    units = sorted(int(u) for u in train["unit"].unique())
    if n is None or n >= len(units):
        return units
    return units[:: max(1, len(units) // n)][:n]  # every k-th: deterministic, spread over ids


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Measure one FD001 -> FD002 adaptation end to end; the results dict (see module doc)."""
    port, password = free_port(), secrets.token_urlsafe(16)
    store = embedded_store.launch("127.0.0.1", port, work / "store", work / "store.log")
    replicas: list[Any] = []
    try:
        settings = bench_settings(
            port,
            work,
            "adaptation",
            data_dir=DATA_DIR,
            retrain_min_new_labels=1,
            reload_timeout_s=180,
            # The embedded store, single-threaded on a shared 2-core machine, took over the
            # default 2 s to answer a unit's failure back-fill under replay load: every try
            # of one failure post was a 503 and the run was lost (twice). MH_STORE_TIMEOUT_MS.
            store_timeout_ms=STORE_TIMEOUT_MS,
        )
        if args.model:
            settings = settings.model_copy(update={"retrain_turbofan_model": args.model})
        if args.epochs:
            settings = settings.model_copy(update={"retrain_epochs": args.epochs})
        create_user(settings, USER, "operator", password)
        from bench.pipeline import train_champion

        started = time.perf_counter()
        champion = train_champion(settings, DOMAIN)
        champion_s = time.perf_counter() - started
        logger.info("champion v%s trained on FD001 in %.0fs", champion, champion_s)
        replicas = [start_uvicorn(settings, work / "logs", timeout_s=180)
                    for _ in range(args.replicas)]  # fmt: skip
        urls = [r.url for r in replicas]
        settings = settings.model_copy(update={"serving_urls": urls})

        fd2 = load_subset(settings.data_dir, "FD002")
        chosen = _subset_units(fd2.train, args.units)
        picked = fd2.train[fd2.train["unit"].isin(chosen)]
        fleet = [(f"FD002-train-u{u:03d}", _items(f"FD002-train-u{u:03d}", rows))
                 for u, rows in picked.groupby("unit")]  # fmt: skip
        since = datetime.now(UTC) - timedelta(minutes=1)
        replay = asyncio.run(_replay(urls, password, fleet, args.workers, args.units_per_call,
                                     failures=True))  # fmt: skip
        replay.pop("last_rul")
        logger.info("replayed %s", replay)

        steps, steps_s = _retrain(settings, since)
        registered = steps["register"]
        served = _served(urls)
        logger.info("register %s; served %s", registered, served)

        # After = what the registry holds under the version the replicas now serve.
        before, _ = registry.load(settings, DOMAIN, version=champion)
        after, _ = registry.load(settings, DOMAIN, version=str(registered["version"]))
        direct, direct_s = _direct(settings, settings.retrain_turbofan_model)
        fd1 = load_subset(settings.data_dir, "FD001")
        models = {"before": before, "after": after, "direct": direct}
        table = {name: {"FD002": _scores(b, fd2), "FD001": _scores(b, fd1)}
                 for name, b in models.items()}  # fmt: skip

        try:  # a failure here must not lose the figures measured above
            api = _api_check(urls, password, fd2, after, args)
        except Exception as exc:
            logger.exception("API check failed")
            api = {"error": f"{type(exc).__name__}: {exc}"}
        rmse = {k: v["FD002"]["rmse"] for k, v in table.items()}
        phm = {k: v["FD002"]["phm08"] for k, v in table.items()}
        gap = (rmse["before"] - rmse["after"]) / (rmse["before"] - rmse["direct"])
        gap_phm = (phm["before"] - phm["after"]) / (phm["before"] - phm["direct"])
        files = {f: find_file(cmapss_dir(settings.data_dir), f) for f in FILES}
        return {
            "summary": {"fd002_rmse": rmse, "gap_closed_rmse": round(gap, 3),
                        "gap_closed_phm08": round(gap_phm, 3), "goal_gap_closed": 0.8,
                        "gate_passed": steps["evaluate"]["passed"],
                        "promoted": registered["promoted"]},
            "scores": table,
            "served": {"registered_version": str(registered["version"]),
                       "champion_before": champion, "replicas": served, "api_test": api},
            "gate": {"passed": steps["evaluate"]["passed"], "rows": _gate_rows(
                Path(steps["evaluate"]["report"])), "reference": steps["evaluate"]["reference"],
                "field": steps["evaluate"]["field"]},
            "replay": {**replay, "fd002_train_units": chosen if args.units else "all",
                       "replicas": args.replicas, "workers": args.workers,
                       "units_per_call": args.units_per_call},
            "timings_s": {"champion_train": round(champion_s, 1), "replay": replay["seconds"],
                          "retrain_steps": steps_s, "retrain": round(sum(steps_s.values()), 1),
                          "direct_train": round(direct_s, 1)},
            "training_facts": {k: v for k, v in steps["rescale"].items()
                               if k.startswith(("archived", "base"))},
            "store_timeout_ms": STORE_TIMEOUT_MS,
            "models": {"name": settings.retrain_turbofan_model, "cap": after.cap,
                       "window": after.window, "epochs": settings.retrain_epochs,
                       "max_windows": settings.retrain_max_windows,
                       "before": {"cap": before.cap, "window": before.window},
                       "direct": {"cap": direct.cap, "window": direct.window}},
            "data": {p.name: _sha256(p) for p in files.values()},
        }  # fmt: skip
    finally:
        stop(replicas, store)


def _api_check(urls: list[str], password: str, fd2: Any, after: Any,
               args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Replay FD002 test units through the reloaded API (unlabelled, as the field sends them);
    their last-cycle answers must be the promoted bundle's (`predict_test`), scored the same."""
    from machine_health.domains.turbofan.metrics import phm08_score
    from machine_health.domains.turbofan.training import predict_test

    if args.api_test_units <= 0:
        return {"skipped": "--api-test-units 0"}
    ids = [int(u) for u in fd2.test_units[: args.api_test_units]]
    test = fd2.test[fd2.test["unit"].isin(ids)]
    units = [(f"FD002-test-u{u:03d}", _items(f"FD002-test-u{u:03d}", r))
             for u, r in test.groupby("unit")]  # fmt: skip
    replay = asyncio.run(_replay(urls, password, units, args.workers, args.units_per_call,
                                 failures=False))  # fmt: skip
    served = np.array([replay["last_rul"][f"FD002-test-u{u:03d}"] for u in ids])
    _, local = predict_test(after, test)
    true = np.asarray(fd2.rul, dtype=float)[np.searchsorted(fd2.test_units, ids)]
    return {"units": len(ids), "cycles": replay["cycles"], "cycles_per_s": replay["cycles_per_s"],
            "max_abs_diff_vs_registry": round(float(np.max(np.abs(served - local))), 4),
            "rmse": round(float(np.sqrt(np.mean((served - true) ** 2))), 3),
            "phm08": round(float(phm08_score(true, served)), 1)}  # fmt: skip
