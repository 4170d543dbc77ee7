"""API load benchmark: one uvicorn worker on loopback, 64 concurrent clients driven by wrk.

    .venv/bin/python -m bench api_load          # as `make bench` runs it
    .venv/bin/python -m bench.api_load [--duration 20] [--users 64] [--tracking-uri URI]
                                       [--routes /predict/turbofan,...] [--no-write]

In ONE run against the same server (embedded store on a free port, in memory): a bare JSON echo
route of the app (`POST /echo`, authenticated like the others, enabled by MH_BENCH_ROUTES), posted
the same vibration window as the vibration routes (the target's comparison) and a small body,
`/predict-test/vibration`, `/predict/vibration`, `/predict-test/turbofan`, `/predict/turbofan`,
each for `--duration` seconds. Bodies are real: a CWRU test window (2048 samples at 48 kHz)
and C-MAPSS FD001 test rows. The clients are wrk connections, one wrk thread each (wrk is C:
locust, used before, took most of the second core at these rates, the core the store needs);
on the turbofan routes each is one engine unit posting its cycles in order (so
/predict/turbofan builds windows from the archive). Before a turbofan route is measured, every
one of its units gets a full history: cycle 1 of every unit is posted first (to
`/predict/turbofan`, 8 units at a time) and timed apart, since a unit's first request on a
replica reads its history from the archive, which the embedded store answers by scanning the
collection (MongoDB uses the `domain_asset` index); then cycles 2..H of every unit (H = the
cycles the served model reads) through `/predict/turbofan`, unmeasured. So both turbofan routes
score windows of H archived cycles (a test prediction reads, and does not add to, the cycles
before it): `/predict` against `/predict-test` is the archive write alone, not a difference in
history. The measured run is the steady state of known units.

Baseline of the turbofan batching target: the served bundle called in-process ONE request at a
time on real histories of the same H cycles (FD001 test units, front-padded when shorter), with
the collector settled as the server settles it (`heap.settle`), over 400 calls. Models: unless
`--tracking-uri` names a registry with @champion versions, both domains are trained first with
their default model kinds (turbofan: the Keras ensemble, with 2 epochs: inference cost does not
depend on the epochs).

Writes docs/benchmarks/api_load.json and the `api_load` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._stack import bench_settings
from machine_health import embedded_store, heap
from machine_health.config import Settings

logger = logging.getLogger("bench.api_load")
REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "docs" / "benchmarks" / "api_load.json"
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"
WRK_SCRIPT = Path(__file__).with_name("_api_wrk.lua")
# (label, path, body): the echo route is measured with the vibration window (the same bytes
# to parse and validate as /predict-test/vibration: the target's comparison) and with a small body.
PHASES = [
    ("/echo", "/echo", "vibration"),
    ("/echo (small body)", "/echo", "small"),
    ("/predict-test/vibration", "/predict-test/vibration", "vibration"),
    ("/predict/vibration", "/predict/vibration", "vibration"),
    ("/predict-test/turbofan", "/predict-test/turbofan", "turbofan"),
    ("/predict/turbofan", "/predict/turbofan", "turbofan"),
]
START, END = "<!-- api_load:start -->", "<!-- api_load:end -->"


def _cpus() -> tuple[set[int], set[int]]:
    """(the API's CPU, everything else's CPUs): the single worker gets a core of its own."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else (set(cpus), set(cpus))


def _pin(pid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError as exc:  # not allowed in some containers: measure unpinned
        logger.warning("cannot pin pid %s to CPUs %s: %s", pid, cpus, exc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(settings: Settings) -> dict[str, str]:
    from machine_health.domains.acoustic.workflow import train_and_register as train_acoustic
    from machine_health.domains.turbofan.models import FitConfig
    from machine_health.domains.turbofan.workflow import train_and_register as train_turbofan
    from machine_health.domains.vibration.workflow import train_and_register as train_vibration

    vibration = train_vibration(settings)
    turbofan = train_turbofan(settings, config=FitConfig(epochs=2, patience=1))
    # not measured here, but served: a replica is ready once every domain has a model
    train_acoustic(settings)
    return {"vibration": str(vibration["version"]), "turbofan": str(turbofan["version"])}


def _payloads(settings: Settings) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    from machine_health.domains import get_domain
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(settings.data_dir, "FD001").test
    rows = [
        {"settings": [float(r[c]) for c in SETTINGS], "sensors": [float(r[c]) for c in SENSORS]}
        for _, r in test.head(400).iterrows()
    ]
    histories = [  # whole test histories: the baseline keeps the cycles the model reads
        group.sort_values("cycle").to_dict(orient="records")
        for _, group in list(test.groupby("unit"))[:50]
    ]
    payloads = {
        "small": get_domain("turbofan").example_input(settings.data_dir),
        "vibration": get_domain("vibration").example_input(settings.data_dir),
        "turbofan_rows": rows,
    }
    return payloads, histories


def _one_at_a_time(settings: Settings, histories: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The served turbofan bundle, called in-process one request at a time on H-cycle histories.

    H is what the API keeps per unit for that bundle (`scoring.history_needed`), so the
    baseline, the warm-up and the served routes all score histories of the same length.
    """
    from machine_health import registry
    from machine_health.api.scoring import history_needed

    bundle, ref = registry.load(settings, "turbofan")
    cycles = history_needed(bundle, settings)
    histories = [history[-cycles:] for history in histories]
    heap.settle()  # as the server does once its models are loaded
    for history in histories[:5]:
        bundle.predict([history])
    times = []
    for history in histories * 8:
        started = time.perf_counter()
        bundle.predict([history])
        times.append(time.perf_counter() - started)
    batch = histories[:64]
    bundle.predict(batch)  # the first call of a new batch size traces the Keras graphs
    batch_times = []
    for _ in range(3):
        started = time.perf_counter()
        bundle.predict(batch)
        batch_times.append(time.perf_counter() - started)
    return {
        "model": bundle.describe().get("model", ""),
        "version": ref.version,
        "calls": len(times),
        "req_per_s": len(times) / sum(times),
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "batch_size": len(batch),
        "batch_ms": float(np.median(batch_times) * 1000),
        "history_cycles": cycles,
        "mean_history_cycles": float(np.mean([len(h) for h in histories])),
    }


def _start_api(
    settings: Settings, log: Path, cpus: set[int], loop: str = "auto"
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, **settings.as_env(), "MH_API_PORT": str(port)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "machine_health.api.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", loop,
             "--no-access-log", "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    _pin(proc.pid, cpus)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited; see {log}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the API was not ready in 180 s; the end of {log}:\n{tail}")


def _token(settings: Settings, url: str, username: str = "bench", role: str = "operator") -> str:
    """A fresh user of `role` in the archive, and its access token."""
    from machine_health.archive import client as archive_client
    from machine_health.archive import users
    from machine_health.security import hash_password

    password = secrets.token_urlsafe(16)
    client = archive_client.sync_client(settings)
    try:
        users.create_user_sync(client[settings.mongodb_db], username, hash_password(password), role)
    finally:
        client.close()
    response = httpx.post(f"{url}/token", data={"username": username, "password": password})
    response.raise_for_status()
    return response.json()["access_token"]


def _write_bodies(work: Path, payloads: dict[str, Any]) -> dict[str, Path]:
    """The files wrk reads: each static body once, and the turbofan rows as JSON fragments."""
    files = {}
    for name in ("small", "vibration"):
        files[name] = work / f"body_{name}.json"
        files[name].write_text(json.dumps(payloads[name]))
    files["turbofan"] = work / "turbofan_rows.txt"
    files["turbofan"].write_text(
        "\n".join(json.dumps(row)[1:-1] for row in payloads["turbofan_rows"]) + "\n"
    )
    return files


async def _first_cycles(
    url: str, route: str, token: str, units: list[str], row: dict[str, Any]
) -> list[float]:
    """Cycle 1 of every unit, 8 units at a time, before the measured run: latencies in ms.

    A unit's first request on a replica reads its history from the archive (the cache holds
    only units already seen); the measured run then shows the steady state of known units.
    """
    headers = {"Authorization": f"Bearer {token}"}
    # 8 at a time: 64 new units at once make the embedded store scan 64 times at once, and
    # connections it then accepts too late time out (503, "store unavailable").
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def post(unit: str) -> float:
            async with gate:
                started = time.perf_counter()
                response = await client.post(route, json={"unit_id": unit, "cycle": 1, **row})
                response.raise_for_status()
                return (time.perf_counter() - started) * 1000

        return list(await asyncio.gather(*(post(unit) for unit in units)))


async def _fill_histories(
    url: str, token: str, units: list[str], rows: list[dict[str, Any]], last_cycle: int
) -> None:
    """Cycles 2..`last_cycle` of every unit through `/predict/turbofan`, units side by side.

    Row k of `rows` is cycle k + 1 (wrapping), as the wrk script numbers them, so the measured
    run continues each unit's life where this leaves it.
    """
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def fill(unit: str) -> None:
            for cycle in range(2, last_cycle + 1):
                row = rows[(cycle - 1) % len(rows)]
                response = await client.post(
                    "/predict/turbofan", json={"unit_id": unit, "cycle": cycle, **row}
                )
                response.raise_for_status()

        await asyncio.gather(*(fill(unit) for unit in units))


def _wrk(
    url: str, phase: tuple[str, str, str], token: str, bodies: dict[str, Path], users: int,
    duration: int, work: Path, turbofan_rows: list[dict[str, Any]], history: int,
) -> dict[str, Any]:  # fmt: skip
    """One route under `users` closed-loop clients (wrk, one thread per connection)."""
    label, route, body = phase
    slug = re.sub(r"\W+", "_", label).strip("_")
    result_file = work / f"wrk_{slug}.json"
    env = {**os.environ, "MH_BENCH_TOKEN": token, "MH_BENCH_RESULT": str(result_file)}
    cold: list[float] = []
    if body == "turbofan":
        prefix = f"bench-{slug}"
        units = [f"{prefix}-{i}" for i in range(users)]
        # cycle 1 through the archiving route on both turbofan routes, timed on its own, then a
        # full history for every unit, so both routes score the same windows
        cold = asyncio.run(_first_cycles(url, "/predict/turbofan", token, units, turbofan_rows[0]))
        asyncio.run(_fill_histories(url, token, units, turbofan_rows, history))
        env |= {"MH_BENCH_ROWS_FILE": str(bodies["turbofan"]), "MH_BENCH_UNIT_PREFIX": prefix,
                "MH_BENCH_FIRST_CYCLE": str(history + 1)}  # fmt: skip
    else:
        env["MH_BENCH_BODY_FILE"] = str(bodies[body])

    def wrk(seconds: int) -> None:
        subprocess.run(
            ["wrk", "-t", str(users), "-c", str(users), "-d", f"{seconds}s", "--timeout", "30s",
             "-s", str(WRK_SCRIPT), f"{url}{route}"],
            env=env, cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip

    if body != "turbofan":
        wrk(2)  # warm-up, not counted: new connections, first requests of a route
    before = _histograms(url)  # batching of the measured run only, not of any warm-up
    wrk(duration)
    figures = json.loads(result_file.read_text())
    seconds = figures["duration_us"] / 1e6
    out = {
        "route": label,
        "requests": figures["requests"],
        "failures": figures["failures"] + figures["transport_errors"],
        "req_per_s": figures["requests"] / seconds,
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "max_ms": figures["max_us"] / 1000,
        "batching": _means(before, _histograms(url)),
    }
    if cold:
        out["first_request_of_a_unit_ms"] = {
            "p50": float(np.percentile(cold, 50)), "max": float(max(cold)), "units": len(cold),
        }  # fmt: skip
    return out


def _histograms(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the API's batching histograms: model calls per domain, archive writes."""
    text = httpx.get(f"{url}/metrics").text
    wanted = {
        "model_batch_vibration": 'machine_health_model_batch_size_{}{{domain="vibration"}}',
        "model_batch_turbofan": 'machine_health_model_batch_size_{}{{domain="turbofan"}}',
        "archive_batch": "machine_health_archive_batch_size_{}",
        "archive_write_s": "machine_health_archive_write_seconds_{}",
    }
    out = {}
    for key, pattern in wanted.items():
        found = [
            re.search(rf"^{re.escape(pattern.format(part))} (\S+)$", text, re.MULTILINE)
            for part in ("sum", "count")
        ]
        out[key] = tuple(float(m.group(1)) if m else 0.0 for m in found)
    return out


def _means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean of each histogram over what happened between two snapshots."""
    out = {}
    for key, (total, count) in after.items():
        d_total, d_count = total - before[key][0], count - before[key][1]
        if d_count:
            out[key] = d_total / d_count
    return out


def _archived(settings: Settings) -> dict[str, int]:
    from machine_health.archive import client as archive_client
    from machine_health.archive import predictions

    client = archive_client.sync_client(settings)
    try:
        db = client[settings.mongodb_db]
        return {d: predictions.count_predictions(db, d) for d in ("vibration", "turbofan")}
    finally:
        client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="mh-bench-api-") as tmp:
        work = Path(tmp)
        store_port = _free_port()
        store = embedded_store.launch("127.0.0.1", store_port, "memory", work / "store.log")
        api = None
        try:
            settings = bench_settings(
                store_port, work / "var", mlflow_tracking_uri=args.tracking_uri,
                bench_routes=True, log_level="WARNING",
            )  # fmt: skip
            if args.tracking_uri is None:
                logger.info("training both domains into a temporary registry")
                _train(settings)
            payloads, histories = _payloads(settings)
            bodies = _write_bodies(work, payloads)
            baseline = _one_at_a_time(settings, histories)
            logger.info("turbofan one request at a time: %.1f req/s", baseline["req_per_s"])
            # The split is taken BEFORE this process pins itself: pinned, it sees one CPU only
            # (until 2026-12-02 the API was pinned to the others' core that way).
            api_cpus, other_cpus = _cpus()
            _pin(store.pid, other_cpus)
            _pin(os.getpid(), other_cpus)  # and so the wrk processes started from here
            api, url = _start_api(settings, work / "api.log", api_cpus, args.loop)
            result_cpus = {  # read back: what the processes really run on
                "api": sorted(os.sched_getaffinity(api.pid)),
                "store_and_load_generator": sorted(os.sched_getaffinity(store.pid)),
            }
            token = _token(settings, url)
            version = httpx.get(f"{url}/version").json()["models"]
            results = []
            for phase in [p for p in PHASES if not args.routes or p[0] in args.routes]:
                result = _wrk(
                    url, phase, token, bodies, args.users, args.duration, work,
                    payloads["turbofan_rows"], baseline["history_cycles"],
                )  # fmt: skip
                logger.info("%s", result)
                results.append(result)
            archived = _archived(settings)
        finally:
            if api is not None:
                api.terminate()
                api.wait(30)
            store.terminate()
            store.wait(10)
    by_route = {r["route"]: r for r in results}
    predicted = {
        d: by_route[f"/predict/{d}"]["requests"] - by_route[f"/predict/{d}"]["failures"]
        for d in ("vibration", "turbofan")
        if f"/predict/{d}" in by_route
    }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",  # noqa: E501
        "command": "make bench (.venv/bin/python -m bench api_load)",
        "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 1)},
        "users": args.users,
        "event_loop": args.loop,
        "cpus": result_cpus,
        "duration_s": args.duration,
        "models": {
            d: {k: (m or {}).get(k) for k in ("name", "version")} for d, m in version.items()
        },
        "routes": results,
        "turbofan_one_at_a_time": baseline,
        "archive": {"acknowledged_ok": predicted, "archived_docs": archived},
    }


def _targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    r = {x["route"]: x for x in result["routes"]}
    out = []
    for domain in ("vibration", "turbofan"):
        ratio = r[f"/predict/{domain}"]["req_per_s"] / r[f"/predict-test/{domain}"]["req_per_s"]
        out.append(
            (
                f"archiving costs <= 20 % ({domain})",
                f"/predict = {ratio:.2f} x /predict-test",
                ratio >= 0.8,
            )
        )
    ratio = r["/predict-test/vibration"]["req_per_s"] / r["/echo"]["req_per_s"]
    out.append(("/predict-test/vibration >= 0.5 x echo", f"{ratio:.2f} x", ratio >= 0.5))
    small = r["/predict-test/vibration"]["req_per_s"] / r["/echo (small body)"]["req_per_s"]
    out.append(("(same, echo of a small body)", f"{small:.2f} x", small >= 0.5))
    base = result["turbofan_one_at_a_time"]["req_per_s"]
    for route in ("/predict-test/turbofan", "/predict/turbofan"):
        ratio = r[route]["req_per_s"] / base
        out.append((f"{route} >= 3 x one-at-a-time model calls", f"{ratio:.1f} x", ratio >= 3))
        p99 = r[route]["p99_ms"]
        out.append((f"{route} p99 <= 100 ms", f"{p99:.0f} ms", p99 <= 100))
    return out


def _analysis(result: dict[str, Any]) -> str:
    """What the figures say about the turbofan targets, computed from them."""
    base = result["turbofan_one_at_a_time"]
    size, batch_ms = base["batch_size"], base["batch_ms"]
    echo = next(r for r in result["routes"] if r["route"] == "/echo (small body)")
    needed = result["users"] / 0.1
    return (
        f"Reading: one model call on {size} histories takes {batch_ms:.1f} ms "
        f"({batch_ms / size:.2f} ms per history) against {base['p50_ms']:.1f} ms for a call on "
        f"one, so batching divides the model's cost per request by "
        f"{base['p50_ms'] * size / batch_ms:.0f}; what bounds the served rate is the request "
        "path around the model (HTTP, validation, the unit's history, the archive write), "
        f"which the echo routes measure. With {result['users']} closed-loop clients, p99 <= "
        f"100 ms needs about {needed:.0f} req/s (Little's law) where the bare echo of a small "
        f"body reached {echo['req_per_s']:.0f} req/s here."
    )


def _batching_text(route: dict[str, Any]) -> str | None:
    """How a predicting route batched: requests per model call, records per archive write."""
    batching = route.get("batching", {})
    domain = route["route"].rsplit("/", 1)[1]
    per_call = batching.get(f"model_batch_{domain}")
    if per_call is None:
        return None
    text = f"`{route['route']}` {per_call:.1f} requests per model call"
    if "archive_batch" in batching:
        text += (
            f", {batching['archive_batch']:.1f} records per archive insert_many "
            f"({1000 * batching['archive_write_s']:.1f} ms each)"
        )
    return text


def markdown(result: dict[str, Any]) -> str:
    lines = [
        START,
        "## API load (`bench/api_load.py`)",
        "",
        "Command: `make bench` (or `.venv/bin/python -m bench api_load`). One uvicorn worker on "
        f"loopback, {result['users']} closed-loop clients (wrk, one thread per connection), "
        f"{result['duration_s']} s per route, all routes in one run against one "
        "server and one embedded store (in memory). The API process is pinned to one core, the "
        "store and wrk to the other (other work on the machine is not); `/echo` is posted "
        "the vibration window (the same bytes to parse as the vibration routes) and, for "
        "reference, a small body. 1-min load average "
        f"{result['load_average_1min']['before']} before the run, "
        f"{result['load_average_1min']['after']} after (a run just before counts in it). "
        f"Measured {result['measured_at']} on {result['machine']}; models served: "
        + ", ".join(f"{d} v{m['version']}" for d, m in result["models"].items())
        + f" (turbofan: {result['turbofan_one_at_a_time']['model']}).",
        "",
        "| route | req/s | p50 ms | p99 ms | requests | failures |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["routes"]:
        lines.append(
            f"| `{r['route']}` | {r['req_per_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['requests']} | {r['failures']} |"
        )
    base = result["turbofan_one_at_a_time"]
    batches = "; ".join(filter(None, (_batching_text(r) for r in result["routes"])))
    lines += [
        "",
        "Turbofan model called in-process one request at a time, on histories of up to "
        f"{base['history_cycles']} cycles (mean {base['mean_history_cycles']:.0f}; every "
        "turbofan unit of the routes had the full "
        f"{base['history_cycles']} archived before its route was measured): "
        f"{base['req_per_s']:.1f} req/s "
        f"(p50 {base['p50_ms']:.1f} ms per call; one warm call on {base['batch_size']} "
        f"histories: {base['batch_ms']:.0f} ms). Batching, means per route: "
        f"{batches}. Archived documents after the run: {result['archive']['archived_docs']} "
        "(more than the counted requests: the first "
        f"{base['history_cycles']} cycles of every turbofan unit, posted before its route was "
        "measured, are archived too).",
        "",
        "First request of a unit (cycle 1 of every unit through `/predict/turbofan`, 8 at a "
        "time, before the measured run; the unit's history is read from the archive): "
        + "; ".join(
            f"`{r['route']}` p50 {c['p50']:.0f} ms, max {c['max']:.0f} ms over {c['units']} units"
            for r in result["routes"]
            if (c := r.get("first_request_of_a_unit_ms"))
        )
        + ". The unit's history is a range on its `cycle_key` (archive/keys.py); the units' "
        "later cycles are the table's steady state.",
        "",
        *_runs_text(result),
        _analysis(result),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, value, met in _targets(result):
        lines.append(f"| {name} | {value} | {'yes' if met else '**no**'} |")
    lines.append(END)
    return "\n".join(lines)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run with each route's req/s, p50 and p99 replaced by their medians over
    `runs` (each run's figures kept under `runs`)."""
    result = copy.deepcopy(runs[0])
    for route in result["routes"]:
        same = [next(r for r in run["routes"] if r["route"] == route["route"]) for run in runs]
        for key in ("req_per_s", "p50_ms", "p99_ms"):
            route[key] = statistics.median(r[key] for r in same)
    result["runs"] = [
        {r["route"]: {"req_per_s": r["req_per_s"], "p99_ms": r["p99_ms"]} for r in run["routes"]}
        for run in runs
    ]
    result["load_average_1min"]["after"] = runs[-1]["load_average_1min"]["after"]
    return result


def _runs_text(result: dict[str, Any]) -> list[str]:
    runs = result.get("runs", [])
    if len(runs) < 2:
        return []
    each = "; ".join(
        f"`{route}` "
        + " / ".join(f"{run[route]['req_per_s']:.0f}" for run in runs)
        + " req/s, p99 "
        + " / ".join(f"{run[route]['p99_ms']:.0f}" for run in runs)
        + " ms"
        for route in runs[0]
    )
    return [f"The table gives each route's median of {len(runs)} whole runs in one sitting; "
            f"each run: {each}.", ""]  # fmt: skip


def write_docs(result: dict[str, Any]) -> None:
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_load", description=__doc__)
    parser.add_argument("--duration", type=int, default=20, help="Seconds per route.")
    parser.add_argument("--users", type=int, default=64, help="Concurrent clients.")
    parser.add_argument("--tracking-uri", default=None, help="Registry with @champion models.")
    parser.add_argument("--no-write", action="store_true", help="Print only, write no docs.")
    parser.add_argument(
        "--loop", default="auto", choices=("auto", "uvloop", "asyncio"),
        help="uvicorn's event loop (auto: uvloop, as `machine-health serve` runs it).",
    )  # fmt: skip
    parser.add_argument(
        "--routes", type=lambda text: text.split(","), default=None,
        help="Only these routes (comma-separated labels, e.g. /predict/turbofan), for A/B runs "
        "of one change; prints the figures and writes no docs.",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=int, default=3,
        help="Whole runs in one sitting; the table gives each route's median of them.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = set(args.routes or ()) - {label for label, _, _ in PHASES}
    if unknown:
        parser.error(f"unknown routes {sorted(unknown)}; known: {[p[0] for p in PHASES]}")
    with tempfile.TemporaryDirectory(prefix="mh-bench-registry-") as registry_dir:
        if args.tracking_uri is None and args.runs > 1:  # train once for every run
            settings = bench_settings(None, Path(registry_dir), log_level="WARNING")
            logger.info("training the three domains into a registry the runs share")
            _train(settings)
            args.tracking_uri = settings.tracking_uri
        result = median_of([run(args) for _ in range(max(args.runs, 1))])
    if args.routes:
        print(json.dumps(result["routes"], indent=1))
        return
    logger.info("\n%s", markdown(result))
    if not args.no_write:
        write_docs(result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
