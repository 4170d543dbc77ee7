"""Labels record who gave them and how (real uvicorn, real store)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings
from tests.support.servers import Server
from tests.support.settings import make_settings
from tests.support.users import create_users, login


@pytest.fixture
def api(
    tmp_path: Path, store_uri: str, uvicorn_server: Callable[..., Server]
) -> Iterator[tuple[Server, Settings, MongoClient]]:
    settings = make_settings(tmp_path, store_uri)
    create_users(settings)
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield uvicorn_server(settings, timeout_s=120), settings, client
    client.drop_database(settings.mongodb_db)
    client.close()


def test_labels_record_who_and_how(api: tuple[Server, Settings, MongoClient]) -> None:
    """Feedback and failure back-fills record the labelling user and the label's source."""
    server, settings, client = api
    url = server.url
    db = client[settings.mongodb_db]
    now = datetime.now(UTC)

    def record(pid: str, domain: str, asset: str, cycle: int | None) -> dict[str, object]:
        return PredictionRecord(
            prediction_id=pid, domain=domain, asset_id=asset, cycle=cycle, input={},
            output={}, model_name="m", model_version="1", user="operator", request_id="r",
            latency_ms=1.0, created_at=now - timedelta(minutes=5),
        ).to_document()  # fmt: skip

    db["predictions"].insert_many(
        [record("vib1", "vibration", "motor-1", None)]
        + [record(f"tf{c}", "turbofan", "unit-9", c) for c in (1, 2, 3)]
    )
    operator = login(url, "operator")
    answer = httpx.post(
        f"{url}/feedback", json={"prediction_id": "vib1", "label": "inner_race"},
        headers=operator, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    doc = db["predictions"].find_one({"prediction_id": "vib1"})
    assert doc["labelled_by"] == "operator" and doc["label_source"] == "feedback"

    admin = login(url, "admin")
    answer = httpx.post(
        f"{url}/assets/unit-9/failure", json={"failure_cycle": 10}, headers=admin, timeout=30
    )
    assert answer.status_code == 200, answer.text
    for doc in db["predictions"].find({"asset_id": "unit-9"}):
        assert doc["labelled_by"] == "admin" and doc["label_source"] == "failure"
        assert doc["label"] == 10 - doc["cycle"]
