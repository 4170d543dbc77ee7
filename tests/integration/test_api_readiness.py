"""Readiness = this replica can answer /predict; the store's health is reported, not routed on.

During a MongoDB election (or any store outage) every replica would go unready if readiness
followed the store, and Traefik would answer 503 although each replica still predicts and
spools. A real uvicorn server and a real store (stopped under the running API) show that a
replica stays ready while the store is down, and leaves the Service only when its spool is
nearly full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from machine_health.domains import get_domain
from tests.support.models import TrainedModels, api_settings
from tests.support.paths import DATA_DIR
from tests.support.servers import start_uvicorn, wait_for
from tests.support.store import Store
from tests.support.users import create_users, login


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    own = Store(tmp_path)
    own.start()
    yield own
    own.stop()


def store_status(url: str) -> str:
    return httpx.get(f"{url}/health", timeout=5).json()["store"]["status"]


def test_replica_stays_ready_and_predicts_while_the_store_is_down(
    tmp_path: Path, store: Store, trained_models: TrainedModels
) -> None:
    settings = api_settings(tmp_path, store.uri, trained_models, store_timeout_ms=800)
    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs", ready_path="/ready")
    try:
        headers = login(server.url, "operator")
        store.stop()
        for _ in range(20):  # across several store probes: never unready for the store
            ready = httpx.get(f"{server.url}/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            time.sleep(0.25)
        wait_for(lambda: store_status(server.url) == "unreachable", 20, "the store probe")
        started = time.monotonic()
        health = httpx.get(f"{server.url}/health", timeout=5)
        assert health.status_code == 200 and time.monotonic() - started < 1.0  # never blocks
        assert "machine_health_store_up 0.0" in httpx.get(f"{server.url}/metrics").text

        ready = httpx.get(f"{server.url}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["store"] == "unreachable" and ready.json()["ready"] is True
        body = {**get_domain("vibration").example_input(DATA_DIR), "asset_id": "ready-m1"}
        answer = httpx.post(
            f"{server.url}/predict/vibration", json=body, headers=headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["archived"] == "spooled"
        after = httpx.get(f"{server.url}/ready", timeout=5)
        assert after.status_code == 200 and after.json()["spool_depth"] >= 1

        store.start()
        wait_for(lambda: store_status(server.url) == "ok", 30, "the store back")
        wait_for(
            lambda: httpx.get(f"{server.url}/ready", timeout=5).json()["spool_depth"] == 0,
            60, "the spool replay",
        )  # fmt: skip
        assert "machine_health_store_up 1.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()


def test_replica_leaves_the_service_before_its_spool_refuses(
    tmp_path: Path, store: Store, trained_models: TrainedModels
) -> None:
    """A spool of 400 kB keeps 20 kB free (more than one ~11 kB vibration record): the replica
    turns unready before any prediction is refused, and ready again once the spool drained."""
    settings = api_settings(
        tmp_path, store.uri, trained_models, store_timeout_ms=800, spool_max_bytes=400_000
    )
    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs", ready_path="/ready")
    try:
        headers = login(server.url, "operator")
        body = get_domain("vibration").example_input(DATA_DIR)
        store.stop()
        spooled = 0
        for _ in range(60):
            ready = httpx.get(f"{server.url}/ready", timeout=5)
            if ready.status_code == 503:
                break
            response = httpx.post(
                f"{server.url}/predict/vibration", json=body, headers=headers, timeout=30
            )
            assert response.status_code == 200, response.text  # ready = can answer
            assert response.json()["archived"] == "spooled"
            spooled += 1
        assert spooled >= 20, f"unready after {spooled} predictions: {ready.text}"
        assert ready.status_code == 503, "the spool never filled up"
        assert ready.json()["spool_full"] is True and ready.json()["models_missing"] == []
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # still alive

        store.start()
        wait_for(
            lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code == 200,
            60, "ready again after the replay",
        )  # fmt: skip
    finally:
        server.stop()
