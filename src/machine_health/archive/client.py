"""Clients and indexes of the document store.

The API uses PyMongo's native async client (`AsyncMongoClient`); pipeline steps and the CLI use
the sync `MongoClient`. Both are created here, with the same options. Indexes (and the one-off
upgrade of an earlier archive) are ensured by the sync client wherever a database is opened
(`open_db`; the API runs `prepare_archive` in a thread at startup), so whichever starts first
leaves the store ready for the other.

Writes use the configured write concern (`MH_MONGODB_WRITE_CONCERN_W`, `MH_MONGODB_JOURNAL`,
`MH_MONGODB_WRITE_TIMEOUT_MS`; default majority + journal). The embedded store accepts it and
acknowledges once its SQLite commit is done (tests/integration/test_store_contract.py), so the
same settings serve both.

Store subset used on purpose (see ARCHITECTURE.md, "known limits of the embedded store"): foreign
keys are strings, counts use `estimated_document_count` or an aggregate `$count`, no dotted
projections, no compound `$group` keys, no `$not`, no transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.archive.keys import KEY_FIELDS
from machine_health.config import Settings
from machine_health.errors import StoreError

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
USERS = "users"
LOGIN_FAILURES = "login_failures"
REPORTS = "reports"

# collection -> indexes. `prediction_id` and `idempotency_key` are unique: a replayed spool
# record or a retried request can never create a second document.
INDEXES: dict[str, list[IndexModel]] = {
    PREDICTIONS: [
        IndexModel([("prediction_id", ASCENDING)], name="prediction_id_unique", unique=True),
        IndexModel([("idempotency_key", ASCENDING)], name="idempotency_key"),
        # One single-field index per sort key (archive/keys.py): every read is a range on one.
        *(IndexModel([(key, ASCENDING)], name=key) for key in KEY_FIELDS),
    ],
    USERS: [IndexModel([("username", ASCENDING)], name="username_unique", unique=True)],
    LOGIN_FAILURES: [
        IndexModel([("key", ASCENDING)], name="key"),
        IndexModel([("at", ASCENDING)], name="at"),
    ],
    REPORTS: [
        IndexModel(
            [("kind", ASCENDING), ("domain", ASCENDING), ("created_at", DESCENDING)],
            name="kind_domain_time",
        )
    ],
}


def _client_options(settings: Settings) -> dict[str, object]:
    """Options of both clients: the same timeouts and the same write concern (by default
    w="majority", j=true: an acknowledged write survives a failover and a crash)."""
    return {
        "serverSelectionTimeoutMS": settings.store_timeout_ms,
        "connectTimeoutMS": settings.store_timeout_ms,
        "tz_aware": True,
        "appname": "machine-health",
        **settings.write_concern,
    }


def sync_client(settings: Settings) -> MongoClient:
    return MongoClient(settings.store_uri, **_client_options(settings))


def async_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(settings.store_uri, **_client_options(settings))


def ensure_indexes_sync(db: Database) -> None:
    """Create every index (idempotent); raise StoreError when the store cannot be reached."""
    # imported here: the upgrade reads the collection names this module defines
    from machine_health.archive.upgrade import add_sort_keys

    try:
        for name, indexes in INDEXES.items():
            db[name].create_indexes(indexes)
        add_sort_keys(db, PREDICTIONS)
    except PyMongoError as exc:
        raise StoreError(f"cannot create indexes in {db.name!r}: {exc}") from exc


@contextmanager
def open_db(settings: Settings) -> Iterator[Database]:
    """The archive database of `settings` (sync client), indexes ensured, closed on exit.

    What a pipeline step, a CLI command or a report run needs for one unit of work; StoreError
    when the store cannot be reached. The API keeps one async client for its lifetime instead.
    """
    client = sync_client(settings)
    try:
        db = client[settings.mongodb_db]
        ensure_indexes_sync(db)
        yield db
    finally:
        client.close()


def prepare_archive(settings: Settings) -> None:
    """Every index, and the one-off upgrade of an earlier archive (archive/upgrade.py): what
    the API runs, in a thread, at startup; StoreError when the store cannot be reached."""
    with open_db(settings):
        pass
