"""What a shadow and explanations cost the answers: one run, the same routes with and without.

    .venv/bin/python -m bench shadow_load        # as `make bench` runs it
    .venv/bin/python -m bench.shadow_load [--duration 15] [--users 64] [--tracking-uri URI]

In ONE run, one embedded store, the API pinned to one core (the store and wrk on the other), as
`bench/api_load.py` measures (its machinery is reused):

1. server A (`MH_EXPLAIN_ARCHIVED=0`): `/predict/vibration` and `/predict/turbofan` with no
   shadow; then a copy of each champion is set as @shadow (the same model: the cost of a shadow
   as heavy as the champion) and loaded through `PUT /reload?slot=shadow`, and the same routes
   again; the shadow results' statuses (ok / late / skipped / error) are read from the API's
   metrics. Then `/predict/vibration?explain=true` and `/predict/turbofan?explain=true`: the
   cost of an asked explanation per request;
2. server B (`MH_EXPLAIN_ARCHIVED=1`, the default, no shadow): the same two routes: what the
   background explanation of every archived prediction costs the answers, and how many it
   explained or skipped.

Plus the in-process cost of `explain` against `predict` on real inputs, 1 and 32 at a time.
Writes docs/benchmarks/shadow_load.json and its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import api_load
from bench._stack import bench_settings
from machine_health import embedded_store
from machine_health.config import Settings

logger = logging.getLogger("bench.shadow_load")
OUT_JSON = api_load.REPO / "docs" / "benchmarks" / "shadow_load.json"
START, END = "<!-- shadow_load:start -->", "<!-- shadow_load:end -->"
DOMAINS = ("vibration", "turbofan")


def _counters(url: str, name: str) -> dict[str, float]:
    """Every sample of a counter, by its label text."""
    text = httpx.get(f"{url}/metrics").text
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}_total\{{(.*?)\}} (\S+)$", text, re.MULTILINE)
    }


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def _shadow_copies(settings: Settings) -> dict[str, str]:
    """A copy of each champion registered and set as @shadow (the same cost as the champion)."""
    from machine_health import registry

    versions = {}
    for domain in DOMAINS:
        bundle, _ = registry.load(settings, domain)
        with registry.start_run(
            settings, run_name=f"shadow-copy-{domain}", tags={"domain": domain}
        ):
            version = registry.log_bundle(settings, bundle).version
        registry.set_shadow(settings, domain, version)
        versions[domain] = version
    return versions


def _phases(
    url: str, token: str, routes: list[str], args: argparse.Namespace, work: Path,
    bodies: dict[str, Path], rows: list[dict[str, Any]], history: int, tag: str,
) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for route in routes:
        body = "vibration" if "vibration" in route else "turbofan"
        label = f"{route} ({tag})"
        result = api_load._wrk(
            url, (label, route, body), token, bodies, args.users, args.duration, work, rows,
            history,
        )  # fmt: skip
        result["setting"] = tag
        logger.info("%s: %.0f req/s, p99 %.0f ms", label, result["req_per_s"], result["p99_ms"])
        out.append(result)
    return out


def _in_process(settings: Settings) -> dict[str, Any]:
    """`explain` against `predict` per call on real inputs, 1 and 32 at a time (ms, median)."""
    from machine_health import registry
    from machine_health.api.scoring import history_needed
    from machine_health.domains.turbofan.data import load_subset
    from machine_health.domains.vibration import demo

    windows = [w["body"] for w in demo.test_windows(settings.data_dir / "cwru", 32)]
    test = load_subset(settings.data_dir, "FD001").test
    out: dict[str, Any] = {}
    for domain in DOMAINS:
        bundle, _ = registry.load(settings, domain)
        if domain == "vibration":
            items: list[Any] = windows
        else:
            cycles = history_needed(bundle, settings)
            items = [
                g.sort_values("cycle").to_dict(orient="records")[-cycles:]
                for _, g in list(test.groupby("unit"))[:32]
            ]
        for size in (1, 32):
            batch = items[:size]
            outputs = bundle.predict(batch)
            bundle.explain(batch, outputs)  # first calls trace graphs / warm caches
            timings: dict[str, list[float]] = {"predict": [], "explain": []}
            for _ in range(15):
                started = time.perf_counter()
                outputs = bundle.predict(batch)
                timings["predict"].append(time.perf_counter() - started)
                started = time.perf_counter()
                bundle.explain(batch, outputs)
                timings["explain"].append(time.perf_counter() - started)
            out[f"{domain} x{size}"] = {
                k: round(float(np.median(v)) * 1000, 2) for k, v in timings.items()
            }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="mh-bench-shadow-") as tmp:
        work = Path(tmp)
        store_port = api_load._free_port()
        store = embedded_store.launch("127.0.0.1", store_port, "memory", work / "store.log")
        servers = []
        try:
            settings = bench_settings(
                store_port, work / "var", mlflow_tracking_uri=args.tracking_uri,
                log_level="WARNING", explain_archived=False,
            )  # fmt: skip
            if args.tracking_uri is None:
                logger.info("training the domains into a temporary registry")
                api_load._train(settings)
            payloads, histories = api_load._payloads(settings)
            bodies = api_load._write_bodies(work, payloads)
            baseline = api_load._one_at_a_time(settings, histories)
            history, rows = baseline["history_cycles"], payloads["turbofan_rows"]
            in_process = _in_process(settings)
            api_cpus, other_cpus = api_load._cpus()
            api_load._pin(store.pid, other_cpus)
            api_load._pin(os.getpid(), other_cpus)
            api, url = api_load._start_api(settings, work / "api_a.log", api_cpus)
            servers.append(api)
            token = api_load._token(settings, url)
            routes = [f"/predict/{d}" for d in DOMAINS]
            results = _phases(url, token, routes, args, work, bodies, rows, history, "no shadow")
            shadows = _shadow_copies(settings)
            service = {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}  # type: ignore[union-attr]
            reload = httpx.put(f"{url}/reload", params={"slot": "shadow"}, headers=service,
                               timeout=300)  # fmt: skip
            reload.raise_for_status()
            served = httpx.get(f"{url}/version").json()["shadows"]
            assert {d: (served[d] or {}).get("version") for d in DOMAINS} == shadows, served
            before = _counters(url, "machine_health_shadow_results")
            results += _phases(url, token, routes, args, work, bodies, rows, history, "shadow")
            statuses = _delta(_counters(url, "machine_health_shadow_results"), before)
            asked = [f"{r}?explain=true" for r in routes]
            from machine_health import registry

            for domain in DOMAINS:  # the asked explanations without a shadow beside them
                registry.clear_shadow(settings, domain)
            httpx.put(f"{url}/reload", params={"slot": "shadow"}, headers=service, timeout=60)
            results += _phases(url, token, asked, args, work, bodies, rows, history, "asked")
            api.terminate()
            api.wait(30)
            servers.remove(api)
            settings_b = settings.model_copy(update={"explain_archived": True})
            api, url = api_load._start_api(settings_b, work / "api_b.log", api_cpus)
            servers.append(api)
            token = api_load._token(settings_b, url, username="bench-b")
            before = _counters(url, "machine_health_explanations")
            results += _phases(
                url, token, routes, args, work, bodies, rows, history, "background explanations"
            )
            time.sleep(5)  # the explainer's queue drains
            explained = _delta(_counters(url, "machine_health_explanations"), before)
        finally:
            for server in servers:
                server.terminate()
                server.wait(30)
            store.terminate()
            store.wait(10)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": ".venv/bin/python -m bench shadow_load",
        "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 1)},
        "users": args.users,
        "duration_s": args.duration,
        "shadow_budget_ms": settings.shadow_budget_ms,
        "shadow_versions": shadows,
        "routes": results,
        "shadow_results": statuses,
        "background_explanations": explained,
        "in_process_ms": in_process,
    }


def markdown(result: dict[str, Any]) -> str:
    by = {(r["route"].split(" (")[0], r["setting"]): r for r in result["routes"]}
    lines = [
        START,
        "## Shadow and explanations under load (`bench/shadow_load.py`, issue 28)",
        "",
        f"Command: `{result['command']}`. One uvicorn worker pinned to one core, the store and "
        f"wrk on the other, {result['users']} closed-loop clients, {result['duration_s']} s per "
        "route, all in one run against one store (server A, then server B with background "
        f"explanations on). The shadow is a copy of each champion (as heavy). Shadow budget "
        f"{result['shadow_budget_ms']:g} ms. 1-min load average "
        f"{result['load_average_1min']['before']} before, {result['load_average_1min']['after']} "
        f"after. Measured {result['measured_at']}.",
        "",
        "| route | setting | req/s | p50 ms | p99 ms | failures |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["routes"]:
        name, setting = r["route"].split(" (")[0], r["setting"]
        lines.append(
            f"| `{name}` | {setting} | {r['req_per_s']:.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['failures']} |"
        )
    lines += ["", "Against the same route with no shadow and nothing explained:", ""]
    for domain in DOMAINS:
        base = by.get((f"/predict/{domain}", "no shadow"))
        for setting in ("shadow", "background explanations"):
            other = by.get((f"/predict/{domain}", setting))
            if base and other:
                lines.append(
                    f"- `/predict/{domain}` with {setting}: p99 {base['p99_ms']:.0f} -> "
                    f"{other['p99_ms']:.0f} ms ({other['p99_ms'] - base['p99_ms']:+.0f}), "
                    f"{base['req_per_s']:.0f} -> {other['req_per_s']:.0f} req/s "
                    f"({other['req_per_s'] / base['req_per_s']:.2f}x)"
                )
        asked = by.get((f"/predict/{domain}?explain=true", "asked"))
        if base and asked:
            lines.append(
                f"- `/predict/{domain}?explain=true`: p50 {base['p50_ms']:.1f} -> "
                f"{asked['p50_ms']:.1f} ms, {asked['req_per_s'] / base['req_per_s']:.2f}x the "
                "throughput"
            )
    lines += [
        "",
        f"Shadow results during the shadow phases: {result['shadow_results']}.",
        f"Background explanations during server B's phases: {result['background_explanations']}.",
        "",
        "In-process, one call (median of 15, ms): "
        + "; ".join(
            f"{k}: predict {v['predict']}, explain {v['explain']}"
            for k, v in result["in_process_ms"].items()
        ),
        END,
    ]
    return "\n".join(lines)


def write_docs(result: dict[str, Any]) -> None:
    OUT_JSON.write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = api_load.BENCHMARKS_MD.read_text()
    section = markdown(result)
    if START in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    api_load.BENCHMARKS_MD.write_text(text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.shadow_load", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument(
        "--tracking-uri", default=None,
        help="registry with @champion versions (the run adds shadow copies to it); default: "
        "train into a temporary one",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    print(markdown(result))
    if not args.no_write:
        write_docs(result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(sys.argv[1:])
