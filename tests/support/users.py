"""API users of a test: one per role, named after it, with passwords made for this session."""

from __future__ import annotations

import secrets

import httpx
from pymongo import MongoClient

from machine_health.config import Settings

PASSWORDS = {role: f"{role}-{secrets.token_hex(8)}" for role in ("admin", "operator", "viewer")}


def create_user(settings: Settings, name: str, role: str, password: str) -> None:
    """A user in `settings`' database, as `machine-health users create` makes one."""
    from machine_health.archive import client as archive_client
    from machine_health.archive import users
    from machine_health.security import hash_password

    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    try:
        db = client[settings.mongodb_db]
        archive_client.ensure_indexes_sync(db)
        users.create_user_sync(db, name, hash_password(password), role)
    finally:
        client.close()


def create_users(settings: Settings) -> None:
    """One user per role, named after it (passwords in PASSWORDS)."""
    for role, password in PASSWORDS.items():
        create_user(settings, role, role, password)


def login(url: str, role: str) -> dict[str, str]:
    """Authorization headers of the user named `role`."""
    response = httpx.post(
        f"{url}/token", data={"username": role, "password": PASSWORDS[role]}, timeout=30
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
