"""Append-only record of administrative changes to the archive: who did what, through what
(api, cli), when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import PyMongoError

from machine_health.errors import StoreError

AUDIT = "audit"


def audit_entry(action: str, *, user: str, via: str, **details: Any) -> dict[str, Any]:
    """One audit document: what was done, by whom, through what (api, cli), when."""
    return {"action": action, "user": user, "via": via, "at": datetime.now(UTC), **details}


async def record_audit(db: AsyncDatabase, entry: dict[str, Any]) -> None:
    """Append `entry` (from `audit_entry`)."""
    try:
        await db[AUDIT].insert_one(dict(entry))
    except PyMongoError as exc:
        raise StoreError(f"cannot record the audit entry: {exc}") from exc


def record_audit_sync(db: Database, entry: dict[str, Any]) -> None:
    """Sync twin of `record_audit` (the CLI)."""
    try:
        db[AUDIT].insert_one(dict(entry))
    except PyMongoError as exc:
        raise StoreError(f"cannot record the audit entry: {exc}") from exc
