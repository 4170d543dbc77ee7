"""One test's Settings: its own database on the session's store, its own var/ and MLflow store."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

from pymongo import MongoClient
from pymongo.database import Database

from machine_health.config import Settings
from tests.support.paths import DATA_DIR


def make_settings(tmp_path: Path, store_uri: str, **overrides: object) -> Settings:
    """Settings of one test: its own database, its own var/ (and so its own MLflow store)."""
    values: dict[str, object] = {
        "env": "test",
        "var_dir": tmp_path / "var",
        "data_dir": DATA_DIR,
        "mongodb_uri": store_uri,
        "mongodb_db": f"t_{uuid.uuid4().hex[:12]}",
        "jwt_secret": secrets.token_urlsafe(48),
        "service_token": secrets.token_urlsafe(48),
        "store_timeout_ms": 1500,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def own_database(settings: Settings) -> Iterator[Database]:
    """`settings`' database on the real store, dropped afterwards (the body of a fixture)."""
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield client[settings.mongodb_db]
    client.drop_database(settings.mongodb_db)
    client.close()
