"""Users, roles and failed-login records in the store (sync for the CLI, async for the API).

Passwords arrive here already hashed (`machine_health.security.hash_password`); this module
never sees a clear-text password.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from machine_health.archive.client import LOGIN_FAILURES, USERS
from machine_health.errors import AlreadyExists, InputError, LastAdmin, NotFound, StoreError

logger = logging.getLogger(__name__)

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
        # Carried by every token issued to the user; any change of access bumps it, which
        # refuses the tokens issued before (api/security.py, `check_current`). It starts at the
        # creation time in ms, so a user deleted and created again under the same name does
        # not accept the tokens of the old one.
        "token_version": int(datetime.now(UTC).timestamp() * 1000),
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


# --- administration: list, disable / enable, set role, delete ---------------------------------
# Every change bumps `token_version` (tokens issued before are refused), is logged with the
# admin who made it and recorded in the `audit` collection. Removing the last enabled admin is
# refused: the change is applied, the enabled admins are counted, and the change is undone if
# none is left, so two admins removing each other at the same moment both get LastAdmin instead
# of both succeeding.
_ACCESS = {"username": 1, "role": 1, "disabled": 1, "token_version": 1, "_id": 0}


def token_version(user: dict[str, Any]) -> int:
    """The user's token version (0 for users created before versions existed)."""
    return int(user.get("token_version") or 0)


def _change(disabled: bool | None, role: str | None) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if disabled is not None:
        update["disabled"] = bool(disabled)
    if role is not None:
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        update["role"] = role
    if not update:
        raise InputError("nothing to change: give disabled and/or role")
    return update


def _enabled_admin(user: dict[str, Any]) -> bool:
    return user.get("role") == "admin" and not user.get("disabled")


def _describe(update: dict[str, Any] | None) -> str:
    if update is None:
        return "deleted"
    return ", ".join(f"{k}={v}" for k, v in update.items())


#: the archive's append-only record of administrative changes (who, what, when, through what)
AUDIT = "audit"


def _log_change(by: str, username: str, update: dict[str, Any] | None) -> dict[str, Any]:
    """Log a change with who made it; the audit document to record."""
    logger.warning("user %r changed by %r: %s", username, by, _describe(update))
    return {
        "action": "user_delete" if update is None else "user_update",
        "user": by,
        "via": "cli" if by.startswith("cli:") else "api",
        "at": datetime.now(UTC),
        "target": username,
        "change": update or {"deleted": True},
    }


def _audit_failed(exc: PyMongoError) -> None:
    # The change is made and logged above; a lost audit document must not undo it.
    logger.error("cannot record the audit entry of a user change: %s", exc)


def _audit_sync(db: Database, entry: dict[str, Any]) -> None:
    try:
        db[AUDIT].insert_one(entry)
    except PyMongoError as exc:
        _audit_failed(exc)


async def _audit(db: AsyncDatabase, entry: dict[str, Any]) -> None:
    try:
        await db[AUDIT].insert_one(entry)
    except PyMongoError as exc:
        _audit_failed(exc)


def _restore(user: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in user.items() if k != "_id"}


_NO_ADMIN = "refused: it would leave no enabled admin (enable or create another admin first)"


def list_users_sync(db: Database) -> list[dict[str, Any]]:
    try:
        return [public(u) for u in db[USERS].find({}).sort([("username", 1)])]
    except PyMongoError as exc:
        raise StoreError(f"cannot read users: {exc}") from exc


def _enabled_admins_sync(db: Database) -> int:
    return sum(1 for u in db[USERS].find({"role": "admin"}, _ACCESS) if _enabled_admin(u))


def update_user_sync(
    db: Database, username: str, *, by: str, disabled: bool | None = None, role: str | None = None
) -> dict[str, Any]:
    """Disable / enable and/or change the role of a user; its existing tokens stop working."""
    update = _change(disabled, role)
    coll = db[USERS]
    try:
        before = coll.find_one_and_update(
            {"username": str(username)}, {"$set": update, "$inc": {"token_version": 1}}
        )
        if before is None:
            raise NotFound(f"no user {username!r}")
        after = coll.find_one({"username": str(username)})
        if _enabled_admin(before) and _enabled_admins_sync(db) == 0:
            undo = {k: before.get(k) for k in update}
            coll.update_one({"username": str(username)}, {"$set": undo})
            raise LastAdmin(f"{_describe(update)} for {username!r} {_NO_ADMIN}")
    except PyMongoError as exc:
        raise StoreError(f"cannot update the user: {exc}") from exc
    _audit_sync(db, _log_change(by, username, update))
    return public(after or {})


def delete_user_sync(db: Database, username: str, *, by: str) -> dict[str, Any]:
    coll = db[USERS]
    try:
        before = coll.find_one_and_delete({"username": str(username)})
        if before is None:
            raise NotFound(f"no user {username!r}")
        if _enabled_admin(before) and _enabled_admins_sync(db) == 0:
            coll.insert_one(_restore(before))
            raise LastAdmin(f"deleting {username!r} {_NO_ADMIN}")
    except PyMongoError as exc:
        raise StoreError(f"cannot delete the user: {exc}") from exc
    _audit_sync(db, _log_change(by, username, None))
    return {"username": before["username"], "deleted": True}


async def list_users(db: AsyncDatabase) -> list[dict[str, Any]]:
    try:
        return [public(u) async for u in db[USERS].find({}).sort([("username", 1)])]
    except PyMongoError as exc:
        raise StoreError(f"cannot read users: {exc}") from exc


async def _enabled_admins(db: AsyncDatabase) -> int:
    return sum([1 async for u in db[USERS].find({"role": "admin"}, _ACCESS) if _enabled_admin(u)])


async def update_user(
    db: AsyncDatabase,
    username: str,
    *,
    by: str,
    disabled: bool | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """Async twin of `update_user_sync` (PATCH /users/{name})."""
    update = _change(disabled, role)
    coll = db[USERS]
    try:
        before = await coll.find_one_and_update(
            {"username": str(username)}, {"$set": update, "$inc": {"token_version": 1}}
        )
        if before is None:
            raise NotFound(f"no user {username!r}")
        after = await coll.find_one({"username": str(username)})
        if _enabled_admin(before) and await _enabled_admins(db) == 0:
            undo = {k: before.get(k) for k in update}
            await coll.update_one({"username": str(username)}, {"$set": undo})
            raise LastAdmin(f"{_describe(update)} for {username!r} {_NO_ADMIN}")
    except PyMongoError as exc:
        raise StoreError(f"cannot update the user: {exc}") from exc
    await _audit(db, _log_change(by, username, update))
    return public(after or {})


async def delete_user(db: AsyncDatabase, username: str, *, by: str) -> dict[str, Any]:
    """Async twin of `delete_user_sync` (DELETE /users/{name})."""
    coll = db[USERS]
    try:
        before = await coll.find_one_and_delete({"username": str(username)})
        if before is None:
            raise NotFound(f"no user {username!r}")
        if _enabled_admin(before) and await _enabled_admins(db) == 0:
            await coll.insert_one(_restore(before))
            raise LastAdmin(f"deleting {username!r} {_NO_ADMIN}")
    except PyMongoError as exc:
        raise StoreError(f"cannot delete the user: {exc}") from exc
    await _audit(db, _log_change(by, username, None))
    return {"username": before["username"], "deleted": True}


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
