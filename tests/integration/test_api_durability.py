"""Durability: every acknowledged prediction is archived exactly once, whatever fails.

Each test runs its OWN embedded store (file-backed, in tmp_path, so its data survives a restart)
and its own API, then stops the store in the middle of real traffic, or kills the API with
SIGKILL while records wait in its spool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from machine_health.archive.spool import DeadLetters, Spool
from machine_health.domains import get_domain
from tests.support.models import TrainedModels, api_settings
from tests.support.paths import DATA_DIR
from tests.support.servers import Server, start_uvicorn, wait_for
from tests.support.store import Store, spool_empty
from tests.support.users import create_users, login


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path)
    store.start()
    yield store
    store.stop()


class Traffic:
    """Operators posting real inputs from a thread until stopped; keeps every answer."""

    def __init__(self, url: str, headers: dict[str, str], units: list[str]) -> None:
        self.url, self.headers, self.units = url, headers, units
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.vibration = get_domain("vibration").example_input(DATA_DIR)
        self.turbofan = get_domain("turbofan").example_input(DATA_DIR)
        self.cycles = dict.fromkeys(units, 1)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def count(self, status: str) -> int:
        return sum(1 for a in self.answers if a["archived"] == status)

    async def _client(self, client: httpx.AsyncClient, worker: int) -> None:
        while not self._stop.is_set():
            if worker < len(self.units):
                unit = self.units[worker]
                body = {**self.turbofan, "unit_id": unit, "cycle": self.cycles[unit]}
                path = "/predict/turbofan"
            else:
                body = {**self.vibration, "asset_id": f"motor-{worker}"}
                path = "/predict/vibration"
            try:
                response = await client.post(path, json=body)
            except httpx.HTTPError as exc:  # the API was killed: not acknowledged
                self.failures.append(type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                self.answers.append(response.json())
                if path.endswith("turbofan"):
                    self.cycles[unit] += 1
            else:
                self.failures.append(f"{response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=30) as c:
            await asyncio.gather(*(self._client(c, w) for w in range(8)))


def _assert_archived_exactly_once(uri: str, db_name: str, answers: list[dict[str, Any]]) -> None:
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        coll = client[db_name]["predictions"]
        per_id = {
            row["_id"]: row["n"]
            for row in coll.aggregate([{"$group": {"_id": "$prediction_id", "n": {"$sum": 1}}}])
        }
        docs = {d["prediction_id"]: d for d in coll.find({}, {"_id": 0, "input": 0})}
    finally:
        client.close()
    assert all(n == 1 for n in per_id.values())
    acknowledged = {a["prediction_id"]: a for a in answers}
    assert len(acknowledged) == len(answers)
    missing = set(acknowledged) - set(docs)
    assert not missing, f"{len(missing)} acknowledged predictions are not archived"
    for pid, answer in acknowledged.items():
        assert docs[pid]["output"] == answer["prediction"]
        assert docs[pid]["model_version"] == answer["model"]["version"]


def test_store_down_mid_traffic_spools_then_replays_everything(
    tmp_path: Path, own_store: Store, trained_models: TrainedModels
) -> None:
    settings = api_settings(tmp_path, own_store.uri, trained_models, store_timeout_ms=800)
    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs")
    try:
        headers = login(server.url, "operator")
        traffic = Traffic(server.url, headers, units=["down-u1", "down-u2"]).start()
        wait_for(lambda: traffic.count("archived") >= 30, 60, "traffic before the outage")
        own_store.stop()
        wait_for(lambda: traffic.count("spooled") >= 30, 60, "spooled answers")
        own_store.start()
        wait_for(lambda: spool_empty(server.url), 60, "the spool replay")
        archived_after = traffic.count("archived")
        wait_for(lambda: traffic.count("archived") >= archived_after + 20, 60, "traffic after")
        traffic.stop()
        assert traffic.failures == []  # the outage cost no request
        wait_for(lambda: spool_empty(server.url), 30, "the spool replay")
        _assert_archived_exactly_once(own_store.uri, settings.mongodb_db, traffic.answers)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "machine_health_spool_depth 0.0" in metrics
        assert 'machine_health_archive_failures_total{reason="store_down"}' in metrics
    finally:
        server.stop()


def test_killed_api_replays_its_spool_at_restart(
    tmp_path: Path, own_store: Store, trained_models: TrainedModels
) -> None:
    settings = api_settings(tmp_path, own_store.uri, trained_models, store_timeout_ms=800)
    create_users(settings)
    server: Server = start_uvicorn(settings, tmp_path / "logs")
    port = int(server.url.rsplit(":", 1)[1])
    headers = login(server.url, "operator")
    traffic = Traffic(server.url, headers, units=["kill-u1"]).start()
    try:
        wait_for(lambda: traffic.count("archived") >= 20, 60, "traffic before the outage")
        own_store.stop()
        wait_for(lambda: traffic.count("spooled") >= 30, 60, "spooled answers")
        server.kill()  # SIGKILL: no shutdown, the spool file and its lock are left behind
        time.sleep(0.5)
        traffic.stop()
    finally:
        server.stop()
    spooled = traffic.count("spooled")
    spool_files = list(settings.spool_dir.glob("spool-*.jsonl"))
    assert spool_files and sum(f.stat().st_size for f in spool_files) > 0

    own_store.start()
    restarted = start_uvicorn(settings, tmp_path / "logs", port=port)
    try:
        wait_for(lambda: spool_empty(restarted.url), 60, "the replay after restart")
        _assert_archived_exactly_once(own_store.uri, settings.mongodb_db, traffic.answers)
        assert spooled >= 30
        assert not [f for f in spool_files if f.exists()]  # the dead process's file is gone
    finally:
        restarted.stop()


def test_full_spool_is_a_clear_503_and_keeps_what_it_acknowledged(
    tmp_path: Path, own_store: Store, trained_models: TrainedModels
) -> None:
    """Store down and the spool at its limit: 503 with the reason, nothing acknowledged is lost."""
    settings = api_settings(
        tmp_path, own_store.uri, trained_models, store_timeout_ms=800, spool_max_bytes=40_000
    )
    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs")
    try:
        headers = login(server.url, "operator")
        body = get_domain("vibration").example_input(DATA_DIR)  # ~11 kB spooled per record
        own_store.stop()
        answers, refused = [], []
        for _ in range(100):
            response = httpx.post(
                f"{server.url}/predict/vibration", headers=headers, timeout=30, json=body
            )
            if response.status_code == 503:
                refused.append(response.json())
                break
            assert response.status_code == 200, response.text
            assert response.json()["archived"] == "spooled"
            answers.append(response.json())
        assert answers and refused, f"the spool never filled up: {refused}"
        assert refused[0]["error"] == "spool_full" and "spool" in refused[0]["reason"]
        own_store.start()
        wait_for(lambda: spool_empty(server.url), 60, "the spool replay")
        _assert_archived_exactly_once(own_store.uri, settings.mongodb_db, answers)
    finally:
        server.stop()


def _spooled_lines(settings: Any) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in settings.spool_dir.glob("spool-*.jsonl"))


def test_idempotent_retry_after_a_restart_with_the_store_down_gets_its_spooled_answer(
    tmp_path: Path, own_store: Store, trained_models: TrainedModels
) -> None:
    """The process that answered is gone and the store is down: the spool has the answer."""
    settings = api_settings(tmp_path, own_store.uri, trained_models, store_timeout_ms=800)
    create_users(settings)
    server = start_uvicorn(settings, tmp_path / "logs")
    port = int(server.url.rsplit(":", 1)[1])
    headers = login(server.url, "operator")
    requests = {
        "vibration": {**get_domain("vibration").example_input(DATA_DIR), "asset_id": "idem-m1"},
        "turbofan": {**get_domain("turbofan").example_input(DATA_DIR), "unit_id": "idem-u1"},
    }
    # A unit's first cycle needs its archived history: sent while the store is up.
    earlier = httpx.post(
        f"{server.url}/predict/turbofan", json={**requests["turbofan"], "cycle": 1},
        headers=headers, timeout=30,
    ).json()  # fmt: skip
    assert earlier["archived"] == "archived"
    requests["turbofan"]["cycle"] = 2

    def post(url: str, domain: str, key: str) -> httpx.Response:
        return httpx.post(
            f"{url}/predict/{domain}", json=requests[domain], timeout=30,
            headers={**headers, "Idempotency-Key": key},
        )  # fmt: skip

    try:
        own_store.stop()
        first = {d: post(server.url, d, f"retry-{d}") for d in requests}
        assert all(r.status_code == 200 for r in first.values()), [r.text for r in first.values()]
        assert {r.json()["archived"] for r in first.values()} == {"spooled"}
        server.kill()  # SIGKILL: its in-memory answers are gone, its spool file stays
    finally:
        server.stop()
    lines = _spooled_lines(settings)
    assert lines == 2

    restarted = start_uvicorn(settings, tmp_path / "logs", port=port)  # the store still down
    try:
        for domain, response in first.items():
            retry = post(restarted.url, domain, f"retry-{domain}")
            assert retry.status_code == 200, retry.text
            assert retry.json() == {**response.json(), "idempotent_replay": True}
        assert _spooled_lines(settings) == lines  # nothing new written
        fresh = post(restarted.url, "vibration", "another-key")  # a new key is scored anew
        assert fresh.status_code == 200 and fresh.json()["archived"] == "spooled"
        assert fresh.json()["prediction_id"] != first["vibration"].json()["prediction_id"]

        own_store.start()
        wait_for(lambda: spool_empty(restarted.url), 60, "the replay after restart")
        answers = [earlier, *(r.json() for r in first.values()), fresh.json()]
        _assert_archived_exactly_once(own_store.uri, settings.mongodb_db, answers)
        client: MongoClient = MongoClient(own_store.uri, tz_aware=True)
        try:
            assert client[settings.mongodb_db]["predictions"].count_documents({}) == 4
        finally:
            client.close()
    finally:
        restarted.stop()


def test_a_spooled_record_the_store_cannot_take_is_dead_lettered_not_a_crash_loop(
    tmp_path: Path, own_store: Store, trained_models: TrainedModels
) -> None:
    """A killed replica left a record BSON cannot encode (an int beyond 8 bytes) between good
    ones: the restarted API starts, archives the good ones and dead-letters that one alone."""
    settings = api_settings(tmp_path, own_store.uri, trained_models, store_timeout_ms=800)
    create_users(settings)
    dead = Spool(settings.spool_dir, owner=settings.replica_name, max_bytes=1 << 20)
    dead.open()
    assert dead.own is not None
    dead.append([
        {"prediction_id": "left-0", "domain": "turbofan", "cycle": 1},
        {"prediction_id": "left-1", "domain": "turbofan", "cycle": 2**63},
        {"prediction_id": "left-2", "domain": "turbofan", "cycle": 3},
    ])  # fmt: skip
    dead.own._handle.close()  # SIGKILL: the file stays, its lock is gone
    server = start_uvicorn(settings, tmp_path / "logs")  # today: startup dies on the replay
    try:
        wait_for(lambda: spool_empty(server.url), 60, "the replay")
        client: MongoClient = MongoClient(own_store.uri, tz_aware=True)
        try:
            coll = client[settings.mongodb_db]["predictions"]
            stored = {d["prediction_id"] for d in coll.find({}, {"prediction_id": 1})}
        finally:
            client.close()
        assert stored == {"left-0", "left-2"}
        entries = DeadLetters(settings.spool_dir).entries()
        assert len(entries) == 1 and '"left-1"' in entries[0]["line"]
        assert entries[0]["reason"].startswith("unencodable") and "8-byte" in entries[0]["reason"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'machine_health_spool_dead_letters_total{reason="unencodable"} 1.0' in metrics
        assert not list(settings.spool_dir.glob("spool-*.jsonl")) or all(
            f.stat().st_size == 0 for f in settings.spool_dir.glob("spool-*.jsonl")
        )  # the dead process's file is gone; this process's own is empty
    finally:
        server.stop()
