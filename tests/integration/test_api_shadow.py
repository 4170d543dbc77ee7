"""A shadow version through two real replicas under traffic: it scores every archived request
beside the champion, never answers, is judged on the labels that arrive, and is promoted, or
refused and dropped, with every replica following.

Two uvicorn processes share one real store and one MLflow registry of the test's own (aliases
move here). Vibration windows are real CWRU test windows; their labels arrive as operators'
feedback. The first shadow is a copy of the champion (the comparison must find no difference
and allow the promotion); the second never raises an alarm (its recall is 0: the comparison
must call it significantly worse and refuse its promotion).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from machine_health.config import Settings
from machine_health.domains import DOMAINS
from machine_health.domains.vibration import demo as vibration_demo
from machine_health.monitoring.performance import run_performance
from machine_health.pipeline.reload import reload_replicas
from tests.support.cli import run_cli
from tests.support.models import TrainedModels, load_trained, register_champion, register_version
from tests.support.servers import Server, wait_for
from tests.support.settings import make_settings, own_database
from tests.support.users import create_users, login

WINDOWS = 48


def _replica(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """One more replica: the same store and registry, its own var/ (spool) and name."""
    update = {"var_dir": tmp_path / name / "var", "replica_name": name,
              "mlflow_tracking_uri": settings.tracking_uri}  # fmt: skip
    return settings.model_copy(update=update)


def _versions(url: str) -> dict[str, Any]:
    body = httpx.get(f"{url}/version", timeout=30).json()
    return {"champion": (body["models"]["vibration"] or {}).get("version"),
            "shadow": (body["shadows"]["vibration"] or {}).get("version")}  # fmt: skip


def _labelled_traffic(
    servers: list[Server], headers: dict[str, str], windows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every window to the replicas in turn, then its label as feedback; the answers."""
    answers = []
    with httpx.Client(headers=headers, timeout=60) as client:
        for i, window in enumerate(windows):
            url = servers[i % len(servers)].url
            response = client.post(f"{url}/predict/vibration", json=window["body"])
            assert response.status_code == 200, response.text
            answer = response.json()
            answers.append(answer)
            feedback = {"prediction_id": answer["prediction_id"], "label": window["label"]}
            labelled = client.post(f"{servers[(i + 1) % len(servers)].url}/feedback", json=feedback)
            assert labelled.status_code == 200, labelled.text
    return answers


def test_shadow_through_two_replicas_judged_promoted_and_refused(
    tmp_path: Path,
    store_uri: str,
    trained_models: TrainedModels,
    uvicorn_server: Callable[..., Server],
) -> None:
    settings = make_settings(tmp_path, store_uri, shadow_sync_s=1.0)  # its own registry
    for domain in DOMAINS:
        register_champion(settings, trained_models, domain)
    champion = load_trained(settings, trained_models, "vibration")
    copy = register_version(settings, champion, "shadow-copy", "vibration")
    deaf_bundle = dataclasses.replace(champion, threshold=1e9)  # finite, never an alarm
    deaf = register_version(settings, deaf_bundle, "shadow-deaf", "vibration")
    create_users(settings)
    try:
        a = uvicorn_server(_replica(settings, tmp_path, "a"))
        b = uvicorn_server(_replica(settings, tmp_path, "b"))
        fleet = settings.model_copy(update={"serving_urls": [a.url, b.url]})
        operator, admin = login(a.url, "operator"), login(a.url, "admin")
        windows = vibration_demo.test_windows(settings.data_dir / "cwru", WINDOWS)
        assert len(windows) == WINDOWS
        with httpx.Client(headers=operator, timeout=60) as client:
            control = [
                client.post(f"{a.url}/predict-test/vibration", json=w["body"]).json()["prediction"]
                for w in windows
            ]

        # 1. The shadow starts on every replica while traffic flows: no answer fails or changes.
        stop, under_load = threading.Event(), []

        def traffic() -> None:
            with httpx.Client(headers=operator, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    window = windows[i % WINDOWS]
                    url = (a, b)[i % 2].url
                    response = client.post(f"{url}/predict/vibration", json=window["body"])
                    under_load.append((i % WINDOWS, response.status_code, response.json()))
                    i += 1

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            started = run_cli(
                ["models", "shadow", "--domain", "vibration", "--version", copy],
                env=fleet.as_env(),
            )
        finally:
            stop.set()
            thread.join()
        assert started.exit_code == 0, started.output
        assert _versions(a.url) == _versions(b.url) == {"champion": "1", "shadow": copy}
        assert len(under_load) > 10
        assert all(status == 200 for _, status, _ in under_load), under_load[:3]
        assert {body["model"]["version"] for _, _, body in under_load} == {"1"}
        assert all(body["prediction"] == control[i] for i, _, body in under_load)

        # 2. Labelled traffic: the shadow's outputs are archived beside the answers.
        answers = _labelled_traffic([a, b], operator, windows)
        assert [x["prediction"] for x in answers] == control
        assert all("shadow" not in x and x["model"]["version"] == "1" for x in answers)
        with httpx.Client(headers=operator, timeout=60) as client:
            records = [
                client.get(f"{b.url}/predictions/{x['prediction_id']}").json() for x in answers
            ]
            assert all(r["shadow"]["model_version"] == copy for r in records)
            assert all(r["shadow"]["status"] == "ok" for r in records)
            assert all(r["shadow"]["output"] == r["output"] for r in records)  # the same model

            # 3. The comparison: paired on the same requests; a copy is not worse.
            report = client.get(f"{b.url}/models/vibration/shadow").json()
        assert report["shadow_version"] == copy and report["n_paired"] == WINDOWS
        assert report["judged"] and report["passed"], report
        assert {r["metric"] for r in report["rows"]} == {"recall_at_fpr", "macro_f1"}
        assert all(r["difference"] == 0 for r in report["rows"])
        # the live performance report carries the same comparison
        performance = run_performance(settings, "vibration", now=datetime.now(UTC))
        assert performance["shadow"]["shadow_version"] == copy
        assert performance["shadow"]["n_paired"] == WINDOWS and performance["shadow"]["passed"]

        # 4. Promotion (UI's route on replica a), then every replica reloads.
        promoted = httpx.post(
            f"{a.url}/models/vibration/shadow/promote", json={}, headers=admin, timeout=120
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["champion"] == {"old": "1", "new": copy}
        reload_replicas(fleet, "vibration", copy)
        assert _versions(a.url) == _versions(b.url) == {"champion": copy, "shadow": None}

        # 5. A worse shadow, started through replica a's API: b follows on its own (sync).
        started = httpx.put(
            f"{a.url}/models/vibration/shadow", json={"version": deaf}, headers=admin, timeout=120
        )
        assert started.status_code == 200, started.text
        wait_for(lambda: _versions(b.url)["shadow"] == deaf, 30, "replica b follows @shadow")
        answers = _labelled_traffic([b, a], operator, windows)
        assert [x["prediction"] for x in answers] == control  # the champion still answers
        with httpx.Client(headers=operator, timeout=60) as client:
            report = client.get(f"{a.url}/models/vibration/shadow").json()
        assert report["shadow_version"] == deaf and report["n_paired"] == WINDOWS
        assert report["judged"] and report["passed"] is False, report
        recall = next(r for r in report["rows"] if r["metric"] == "recall_at_fpr")
        assert recall["challenger"] == 0 and not recall["passed"]
        refused = httpx.post(
            f"{b.url}/models/vibration/shadow/promote", json={}, headers=admin, timeout=120
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "promotion_refused"
        assert "significantly worse" in refused.json()["reason"]

        # 6. Dropped through replica b; a follows on its own.
        dropped = httpx.delete(f"{b.url}/models/vibration/shadow", headers=admin, timeout=60)
        assert dropped.status_code == 200 and dropped.json()["dropped"] == deaf
        wait_for(lambda: _versions(a.url)["shadow"] is None, 30, "replica a drops the shadow")
        assert _versions(a.url)["champion"] == _versions(b.url)["champion"] == copy
    finally:
        for _ in own_database(settings):
            pass
