"""Users, roles and failed-login records in the store (sync for the CLI, async for the API).

Passwords arrive here already hashed (`machine_health.api.security.hash_password`); this module
never sees a clear-text password.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from machine_health.archive.client import LOGIN_FAILURES, USERS
from machine_health.errors import AlreadyExists, InputError, StoreError

Role = Literal["admin", "operator", "viewer", "service"]
ROLES: tuple[str, ...] = get_args(Role)
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def validate_username(username: str) -> str:
    if not (1 <= len(username) <= 64) or not set(username) <= _NAME_CHARS:
        raise InputError("username: 1-64 characters among letters, digits and . _ @ -")
    return username


def _user_doc(username: str, password_hash: str, role: str) -> dict[str, Any]:
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return {
        "username": validate_username(username),
        "password_hash": password_hash,
        "role": role,
        "disabled": False,
        "created_at": datetime.now(UTC),
    }


def public(user: dict[str, Any]) -> dict[str, Any]:
    """A user without its hash (what the API may return)."""
    return {k: v for k, v in user.items() if k not in ("_id", "password_hash")}


def create_user_sync(db: Database, username: str, password_hash: str, role: str) -> dict[str, Any]:
    doc = _user_doc(username, password_hash, role)
    try:
        db[USERS].insert_one(doc)
    except DuplicateKeyError as exc:
        raise AlreadyExists(f"user {username!r} exists already") from exc
    except PyMongoError as exc:
        raise StoreError(f"cannot create the user: {exc}") from exc
    return public(doc)


async def create_user(
    db: AsyncDatabase, username: str, password_hash: str, role: str
) -> dict[str, Any]:
    doc = _user_doc(username, password_hash, role)
    try:
        await db[USERS].insert_one(doc)
    except DuplicateKeyError as exc:
        raise AlreadyExists(f"user {username!r} exists already") from exc
    except PyMongoError as exc:
        raise StoreError(f"cannot create the user: {exc}") from exc
    return public(doc)


async def get_user(db: AsyncDatabase, username: str) -> dict[str, Any] | None:
    try:
        return await db[USERS].find_one({"username": str(username)})
    except PyMongoError as exc:
        raise StoreError(f"cannot read users: {exc}") from exc


# --- failed logins: one small document per failure, counted over a sliding window --------------
async def recent_failures(db: AsyncDatabase, key: str, window_seconds: int) -> int:
    since = datetime.now(UTC) - timedelta(seconds=window_seconds)
    pipeline = [{"$match": {"key": key, "at": {"$gte": since}}}, {"$count": "n"}]
    try:
        rows = [row async for row in await db[LOGIN_FAILURES].aggregate(pipeline)]
    except PyMongoError as exc:
        raise StoreError(f"cannot read login failures: {exc}") from exc
    return int(rows[0]["n"]) if rows else 0


async def record_failure(
    db: AsyncDatabase, keys: list[str], window_seconds: int, *, attempt: str | None = None
) -> None:
    """Count a failed (or not yet checked: `attempt` names it) login under every key."""
    now = datetime.now(UTC)
    tag = {"attempt": attempt} if attempt else {}
    try:
        await db[LOGIN_FAILURES].insert_many([{"key": key, "at": now, **tag} for key in keys])
        # Forget what is older than the window, so the collection stays small.
        await db[LOGIN_FAILURES].delete_many(
            {"at": {"$lt": now - timedelta(seconds=window_seconds)}}
        )
    except PyMongoError as exc:
        raise StoreError(f"cannot record a login failure: {exc}") from exc


async def forget_attempt(db: AsyncDatabase, attempt: str) -> None:
    """Uncount an attempt recorded before its check (it succeeded, or was throttled)."""
    try:
        await db[LOGIN_FAILURES].delete_many({"attempt": attempt})
    except PyMongoError as exc:
        raise StoreError(f"cannot clear a login attempt: {exc}") from exc


async def clear_failures(db: AsyncDatabase, key: str) -> None:
    try:
        await db[LOGIN_FAILURES].delete_many({"key": key})
    except PyMongoError as exc:
        raise StoreError(f"cannot clear login failures: {exc}") from exc
