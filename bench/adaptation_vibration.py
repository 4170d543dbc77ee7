"""Adaptation (vibration): a champion that knows one fault size learns the other through the loop.

    .venv/bin/python -m bench.adaptation_vibration                  # 0.007 -> 0.014, then reverse
    .venv/bin/python -m bench.adaptation_vibration --vibration-champion-size 0.007
    .venv/bin/python -m bench.adaptation --domain vibration         # via bench/adaptation.py

Per direction (champion size A, fed size B), everything real, in a fresh work directory:

1. a manifest directory holding only the normal recording and the size-A fault recordings
   (`labels.csv` filtered from the CWRU one, the `.mat` files symlinked, never copied): the
   product's own way of choosing what a model trains on (`data_dir` = a manifest directory,
   `domains/vibration/data.py`), used as the settings' `data_dir` by every step below;
2. a fresh embedded store (in memory, its own pid file under the work dir), a local MLflow
   store, the champion trained and registered by `workflow.train_and_register` (train portion
   minus the gate's reference carve-out, hop 256), real API replicas (uvicorn);
3. BEFORE: every held-out window (the test portion, the last 30 % of each of the 7 recordings,
   2048 samples every 256) scored through POST /predict-test/vibration (never archived);
4. the size-B fault recordings' TRAINING portion (first 70 %), cut into non-overlapping
   windows of 2048 samples, each recording split into `assets_per_recording` contiguous
   segments posted under their own asset id (as separate sensors: the gate's field slice needs
   >= 5 asset groups to be judged), interleaved across assets, through POST /predict/vibration
   (archived), then each window's true class through POST /feedback;
5. ONE pipeline run, every step of `machine_health.pipeline.STEPS` in order (check, not forced;
   extract, validate, rescale, train, evaluate = the two-slice gate, register, reload);
6. AFTER: the same held-out windows through the (reloaded) API replicas.

Figures (per size, on its held-out windows): fault-TYPE macro accuracy = mean over ball /
inner_race / outer_race of the share of that class's windows whose most probable FAULT class
(argmax over the three fault classes only) is right, with a moving-block bootstrap 95 %
interval; the 4-class accuracy (plain argmax, the size's fault windows + the normal held-out
windows, plain share and macro); detection recall at the served threshold; false alarms on the
normal held-out windows. Plus the gate rows (from the run's gate.json), step timings,
windows/s through /predict and /feedback, reload convergence. Results:
docs/benchmarks/adaptation.json, key "vibration" (other keys kept), written by
`bench/adaptation.py` or, run standalone, by `_main` here; `run` itself writes nothing.

Caveat: one recording per class and size, so every interval is within-recording; held-out
windows overlap (hop 256 = 1/8 window): ~8 windows per independent one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._stack import bench_settings, stop
from bench.provenance import commit, provenance
from machine_health import embedded_store
from machine_health.domains.base import round_robin
from machine_health.domains.vibration import workflow
from machine_health.domains.vibration.data import (
    MANIFEST,
    NORMAL,
    Recording,
    WindowSet,
    load_manifest,
    make_windows,
    resolve_manifest_dir,
)
from machine_health.pipeline import STEPS, step_function
from research.vibration_generalisation import block_bootstrap, macro_accuracy, type_predictions
from tests.support.paths import DATA_DIR
from tests.support.servers import Server, free_port, start_uvicorn
from tests.support.users import create_users, login

logger = logging.getLogger("bench.adaptation_vibration")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "adaptation.json"
KEY = "vibration"
FAULTS = ("ball", "inner_race", "outer_race")
SIZES = ("0.007", "0.014")
SIZE_COLUMN = "fault_diameter_in"
DEFAULTS: dict[str, Any] = {
    "champion_size": list(SIZES),  # one direction per champion size
    "feed_hop": workflow.WINDOW,  # non-overlapping fed windows
    "eval_hop": workflow.HOP,  # the product's evaluation hop
    "assets_per_recording": 2,
    "replicas": 2,
    "concurrency": 4,
    "data_dir": None,  # None = tests.support.paths.DATA_DIR
}


def _arg(args: argparse.Namespace, name: str) -> Any:
    """`args.vibration_<name>` (the options of `add_arguments`), else the default."""
    value = getattr(args, f"vibration_{name}", None)
    return DEFAULTS[name] if value is None else value


# --- data -------------------------------------------------------------------------------------
def size_manifest(source: Path, size: str, into: Path) -> Path:
    """A manifest directory listing the normal recording(s) and the `size` fault recordings of
    `source`'s manifest, the recordings symlinked (no data copied)."""
    source = resolve_manifest_dir(source)
    into.mkdir(parents=True, exist_ok=True)
    with (source / MANIFEST).open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r["label"].strip() == NORMAL or r.get(SIZE_COLUMN, "") == size]
    with (into / MANIFEST).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        link = into / row["file"]
        if not link.exists():
            link.symlink_to((source / row["file"]).resolve())
    return into


def feed_items(
    recordings: Sequence[Recording], *, hop: int, assets_per_recording: int
) -> list[dict[str, Any]]:
    """The training-portion windows of `recordings` as /predict bodies with their true class,
    each recording's windows split into contiguous segments (one asset each), interleaved."""
    groups = []
    for rec in recordings:
        ws = make_windows([rec], portion="train", window=workflow.WINDOW, hop=hop,
                          sample_rate=rec.sample_rate)  # fmt: skip
        stem = Path(rec.file).stem.replace("@", "-")
        for k, rows in enumerate(np.array_split(np.arange(len(ws)), assets_per_recording)):
            asset = f"motor-{stem}-s{k}"[:64]
            groups.append([
                {"body": {"asset_id": asset, "samples": np.round(ws.windows[i], 6).tolist(),
                          "sample_rate": rec.sample_rate, "rpm": rec.rpm},
                 "label": rec.label}
                for i in rows
            ])  # fmt: skip
    return round_robin(groups)


def held_out(data_dir: Path, hop: int) -> WindowSet:
    """The test portion (last 30 %) of every recording of the full manifest."""
    return make_windows(
        load_manifest(resolve_manifest_dir(data_dir)), portion="test", window=workflow.WINDOW,
        hop=hop, sample_rate=workflow.SAMPLE_RATE,
    )  # fmt: skip


# --- HTTP -------------------------------------------------------------------------------------
def _post_all(
    urls: list[str], headers: dict[str, str], requests: list[tuple[str, dict[str, Any]]],
    concurrency: int,
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """POST every (path, body) across the replicas in turn, `concurrency` at a time, in order of
    submission per worker; (answers in request order, seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [httpx.Client(base_url=u, headers=headers, timeout=120) for u in urls]

    def one(i: int) -> dict[str, Any]:
        path, body = requests[i]
        response = clients[i % len(clients)].post(path, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(one, range(len(requests))))
    finally:
        for client in clients:
            client.close()
    return answers, time.perf_counter() - started


def score_held_out(
    urls: list[str], headers: dict[str, str], windows: WindowSet, concurrency: int
) -> tuple[np.ndarray, np.ndarray, list[str], set[str], float]:
    """(probabilities (n, labels), flagged, labels, served versions, seconds) through
    /predict-test (never archived)."""
    requests = [
        ("/predict-test/vibration",
         {"asset_id": "heldout", "samples": np.round(w, 6).tolist(),
          "sample_rate": windows.sample_rate, "rpm": float(rpm)})
        for w, rpm in zip(windows.windows, windows.rpm, strict=True)
    ]  # fmt: skip
    answers, seconds = _post_all(urls, headers, requests, concurrency)
    labels = sorted(answers[0]["prediction"]["probabilities"])
    proba = np.array([[a["prediction"]["probabilities"][k] for k in labels] for a in answers])
    flagged = np.array([bool(a["prediction"]["is_anomaly"]) for a in answers])
    versions = {str(a["model"]["version"]) for a in answers}
    return proba, flagged, labels, versions, seconds


# --- figures ----------------------------------------------------------------------------------
def block_interval(
    truth: np.ndarray, picked: np.ndarray, sources: np.ndarray, block: int, seed: int = 0
) -> list[float]:
    """95 % moving-block bootstrap interval of the type macro accuracy (blocks resampled within
    each recording; one recording per class, so within-recording spread only)."""
    low, high = block_bootstrap(truth, picked, sources, np.random.default_rng(seed), block)
    return [round(low, 4), round(high, 4)]


def size_figures(
    windows: WindowSet, sizes: np.ndarray, proba: np.ndarray, flagged: np.ndarray,
    labels: list[str], size: str, block: int,
) -> dict[str, Any]:  # fmt: skip
    """The figures of one fault size on its held-out windows (+ the normal held-out windows)."""
    fault = (sizes == size) & np.isin(windows.labels, FAULTS)
    normal = windows.labels == NORMAL
    type_pick, all_pick = type_predictions(proba, labels)
    truth = windows.labels
    four = fault | normal
    return {
        "n_fault_windows": int(fault.sum()),
        "n_fault_windows_by_class": {c: int((fault & (truth == c)).sum()) for c in FAULTS},
        "n_normal_windows": int(normal.sum()),
        "type_macro_accuracy": round(macro_accuracy(truth[fault], type_pick[fault], FAULTS), 4),
        "type_interval_95": block_interval(
            truth[fault], type_pick[fault], windows.sources[fault], block
        ),
        "type_accuracy_by_class": {
            c: round(float(np.mean(type_pick[fault & (truth == c)] == c)), 4) for c in FAULTS
        },
        "type_confusion": {
            c: {p: int(np.sum(fault & (truth == c) & (type_pick == p))) for p in FAULTS}
            for c in FAULTS
        },
        "accuracy_4class": round(float(np.mean(all_pick[four] == truth[four])), 4),
        "macro_accuracy_4class": round(
            macro_accuracy(truth[four], all_pick[four], (*FAULTS, NORMAL)), 4
        ),
        "recall_at_threshold": round(float(flagged[fault].mean()), 4),
        "false_alarm_rate": round(float(flagged[normal].mean()), 4),
    }


def _gate_rows(report_path: str) -> dict[str, Any]:
    report = json.loads(Path(report_path).read_text())
    keep = ("slice", "metric", "better", "champion", "challenger", "difference", "interval",
            "n_groups", "passed", "verdict")  # fmt: skip
    return {
        "passed": report["passed"],
        "tolerance": report["tolerance"],
        "rows": [{k: r.get(k) for k in keep} for r in report["metrics"]],
        "reference": report["reference"],
        "field": report["field"],
        "headline": {k: report["headline"].get(k) for k in ("facts", "champion", "challenger")},
    }


# --- one direction ----------------------------------------------------------------------------
def run_direction(args: argparse.Namespace, champion_size: str, work: Path) -> dict[str, Any]:
    data_dir = Path(_arg(args, "data_dir") or DATA_DIR)
    fed_size = next(s for s in SIZES if s != champion_size)
    recordings = load_manifest(resolve_manifest_dir(data_dir))
    size_of = {r.file: r.meta.get(SIZE_COLUMN, "") for r in recordings}
    fed = [r for r in recordings if r.label in FAULTS and size_of[r.file] == fed_size]
    manifest = size_manifest(data_dir, champion_size, work / f"cwru-{champion_size}")
    windows = held_out(data_dir, int(_arg(args, "eval_hop")))
    sizes = np.array([size_of[str(s)] for s in windows.sources])
    block = max(1, 4 * workflow.WINDOW // int(_arg(args, "eval_hop")))  # 4 windows' span
    items = feed_items(fed, hop=int(_arg(args, "feed_hop")),
                       assets_per_recording=int(_arg(args, "assets_per_recording")))  # fmt: skip
    concurrency = int(_arg(args, "concurrency"))

    var = work / "var"
    port = free_port()
    store = embedded_store.launch("127.0.0.1", port, embedded_store.MEMORY, var / "store.log")
    replicas: list[Server] = []
    try:
        settings = bench_settings(port, var, "adaptation", data_dir=manifest, reload_timeout_s=180)
        started = time.perf_counter()
        trained = workflow.train_and_register(settings)
        champion_s = time.perf_counter() - started
        create_users(settings)
        replicas = [start_uvicorn(settings, var / "logs", timeout_s=180)
                    for _ in range(int(_arg(args, "replicas")))]  # fmt: skip
        urls = [r.url for r in replicas]
        settings = settings.model_copy(update={"serving_urls": urls})
        headers = login(urls[0], "operator")

        proba, flagged, labels, before_versions, before_s = score_held_out(
            urls, headers, windows, concurrency
        )
        before = {s: size_figures(windows, sizes, proba, flagged, labels, s, block) for s in SIZES}
        logger.info("before (v%s): %s", trained["version"],
                    {s: before[s]["type_macro_accuracy"] for s in SIZES})  # fmt: skip

        fed_from = datetime.now(UTC)
        answers, predict_s = _post_all(
            urls, headers, [("/predict/vibration", i["body"]) for i in items], concurrency
        )
        feedback = [
            ("/feedback", {"prediction_id": a["prediction_id"], "label": i["label"]})
            for a, i in zip(answers, items, strict=True)
        ]
        _, feedback_s = _post_all(urls, headers, feedback, concurrency)
        fed_labels = sorted(answers[0]["prediction"]["probabilities"])
        fed_proba = np.array(
            [[a["prediction"]["probabilities"][k] for k in fed_labels] for a in answers]
        )
        fed_truth = np.array([i["label"] for i in items])
        fed_type, fed_all = type_predictions(fed_proba, fed_labels)
        fed_classes = {c: sum(i["label"] == c for i in items) for c in FAULTS}

        keys = {
            "settings": settings, "domain": "vibration", "run_id": f"adapt-{champion_size}",
            "interval_start": (fed_from - timedelta(minutes=1)).isoformat(),
            "interval_end": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
        }  # fmt: skip
        steps: dict[str, float] = {}
        results: dict[str, dict[str, Any]] = {}
        for step in STEPS:
            t0 = time.perf_counter()
            results[step] = step_function(step)(**keys)
            steps[step] = round(time.perf_counter() - t0, 2)
        retrain_s = round(sum(steps.values()), 1)
        if not results["check"].get("retrain", True):
            logger.warning("check declined to retrain: %s", results["check"])

        proba, flagged, labels, after_versions, after_s = score_held_out(
            urls, headers, windows, concurrency
        )
        after = {s: size_figures(windows, sizes, proba, flagged, labels, s, block) for s in SIZES}
        logger.info("after (v%s): %s", sorted(after_versions),
                    {s: after[s]["type_macro_accuracy"] for s in SIZES})  # fmt: skip
        reload = results["reload"]
        gate = _gate_rows(results["evaluate"]["report"]) if "report" in results["evaluate"] else {}
        return {
            "champion_size": champion_size,
            "fed_size": fed_size,
            "champion_manifest": [r.file for r in load_manifest(manifest)],
            "champion_version": str(trained["version"]),
            "champion_train_and_register_s": round(champion_s, 1),
            "champion_time_split_test": {
                k: trained[k] for k in ("classifier", "anomaly") if k in trained
            },
            "fed": {
                "recordings": [r.file for r in fed],
                "windows": len(items),
                "windows_by_class": fed_classes,
                "assets": len({i["body"]["asset_id"] for i in items}),
                "hop": int(_arg(args, "feed_hop")),
                "champion_on_fed": {
                    "type_macro_accuracy": round(macro_accuracy(fed_truth, fed_type, FAULTS), 4),
                    "accuracy_4class": round(float(np.mean(fed_all == fed_truth)), 4),
                },
                "predict_windows_per_s": round(len(items) / predict_s, 1),
                "feedback_per_s": round(len(items) / feedback_s, 1),
                "concurrency": concurrency,
            },
            "held_out": {
                "hop": int(_arg(args, "eval_hop")),
                "windows": len(windows),
                "independent_windows": int(
                    len(windows) * int(_arg(args, "eval_hop")) // workflow.WINDOW
                ),
                "scored_windows_per_s_before": round(len(windows) / before_s, 1),
                "scored_windows_per_s_after": round(len(windows) / after_s, 1),
            },
            "before": {"served_versions": sorted(before_versions), **before},
            "after": {"served_versions": sorted(after_versions), **after},
            "check": {k: results["check"].get(k) for k in ("retrain", "reasons", "new_labels")},
            "training_facts": {
                k: v
                for k, v in results["rescale"].items()
                if k.startswith(("archived", "base", "windows"))
            },
            "validate": {k: results["validate"].get(k) for k in ("rows", "quarantined", "labels")},
            "gate": gate,
            "register": {
                k: results["register"].get(k)
                for k in ("version", "promoted", "champion", "old_champion")
            },
            "steps_s": steps,
            "retrain_cycle_s": retrain_s,
            "reload": {k: reload.get(k) for k in ("reloaded", "convergence_s", "replicas")},
            "replicas": len(urls),
        }
    finally:
        stop(replicas, store)


# --- entry points -----------------------------------------------------------------------------
def summary(directions: list[dict[str, Any]]) -> dict[str, Any]:
    """Type macro accuracy before -> after, fed size and champion size, per direction."""
    return {
        f"champion {d['champion_size']} -> fed {d['fed_size']}": {
            "fed_windows": d["fed"]["windows"],
            "fed_size_type_accuracy": [d[k][d["fed_size"]]["type_macro_accuracy"]
                                       for k in ("before", "after")],
            "champion_size_type_accuracy": [d[k][d["champion_size"]]["type_macro_accuracy"]
                                            for k in ("before", "after")],
            "gate_passed": d["gate"].get("passed"),
            "promoted": d["register"].get("promoted"),
        }
        for d in directions
    }  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every requested direction in its own subdirectory of `work`; the results (the caller
    records them with commit, date and command: `bench/adaptation.py` or `_main` here)."""
    data_dir = Path(_arg(args, "data_dir") or DATA_DIR)
    manifest_dir = resolve_manifest_dir(data_dir)
    directions = []
    for size in _arg(args, "champion_size"):
        logger.info("vibration adaptation: champion on %s in", size)
        directions.append(run_direction(args, size, work / f"champion-{size}"))
    return {
        "summary": summary(directions),
        "provenance": provenance(
            data=[manifest_dir / r.file for r in load_manifest(manifest_dir)],
            window=workflow.WINDOW,
            champion_train_hop=workflow.HOP,
            feed_hop=int(_arg(args, "feed_hop")),
            eval_hop=int(_arg(args, "eval_hop")),
            sample_rate=workflow.SAMPLE_RATE,
        ),
        "directions": directions,
    }


def write(result: dict[str, Any], out: Path = OUT) -> None:
    """Replace only the "vibration" key of the shared results file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[KEY] = result
    out.write_text(json.dumps(previous, indent=2) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This half's options (prefixed: `bench/adaptation.py` shares one parser with turbofan)."""
    group = parser.add_argument_group("vibration")
    group.add_argument(
        "--vibration-champion-size",
        action="append",
        choices=SIZES,
        help="fault size the champion trains on (repeat for both; default both)",
    )
    group.add_argument("--vibration-feed-hop", type=int, help="hop of the fed windows (2048)")
    group.add_argument("--vibration-eval-hop", type=int, help="hop of the held-out windows (256)")
    group.add_argument(
        "--vibration-assets-per-recording", type=int, help="asset ids per fed recording (default 2)"
    )
    group.add_argument("--vibration-replicas", type=int, help="API replicas (default 2)")
    group.add_argument("--vibration-concurrency", type=int, help="requests in flight (4)")
    group.add_argument("--vibration-data-dir", type=Path,
                       help="CWRU manifest dir or data root (default: test data)")  # fmt: skip


def _main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mh-adapt-vibration-") as tmp:
        result = run(args, Path(tmp))
    result = {
        "commit": commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": result["provenance"]["command"],
        **result,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.write:
        write(result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    _main(sys.argv[1:])
