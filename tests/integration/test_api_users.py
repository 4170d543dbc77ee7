"""User administration against a real uvicorn and the real store: list, disable, enable, demote,
delete (admin routes and the `machine-health users` CLI), and the tokens of a user who lost
access refused at once on the replica that made the change and within the cache time on others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from typer.testing import CliRunner

from machine_health.cli import app
from machine_health.config import Settings, get_settings
from tests.support.servers import Server
from tests.support.settings import make_settings
from tests.support.users import PASSWORDS, create_user, create_users, login

#: a short user cache, so that a change made outside this replica shows within seconds
CACHE_S = 2.0


@pytest.fixture
def api(
    tmp_path: Path, store_uri: str, uvicorn_server: Callable[..., Server]
) -> Iterator[tuple[Server, Settings, MongoClient]]:
    settings = make_settings(tmp_path, store_uri, user_cache_seconds=CACHE_S)
    create_users(settings)
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield uvicorn_server(settings, timeout_s=120), settings, client
    client.drop_database(settings.mongodb_db)
    client.close()


def _token(url: str, name: str, password: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/token", data={"username": name, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _reads(url: str, headers: dict[str, str]) -> int:
    return httpx.get(f"{url}/predictions", headers=headers, timeout=30).status_code


def test_admin_routes_disable_demote_and_delete_refuse_existing_tokens(
    api: tuple[Server, Settings, MongoClient],
) -> None:
    server, settings, client = api
    url = server.url
    admin = login(url, "admin")
    for name, role in (("ops1", "operator"), ("ops2", "operator"), ("boss2", "admin")):
        create_user(settings, name, role, f"{name}-long-password")
    ops1 = _token(url, "ops1", "ops1-long-password")
    ops2 = _token(url, "ops2", "ops2-long-password")
    boss2 = _token(url, "boss2", "boss2-long-password")
    assert _reads(url, ops1) == 200 and _reads(url, ops2) == 200

    listed = httpx.get(f"{url}/users", headers=admin, timeout=30)
    assert listed.status_code == 200, listed.text
    names = {u["username"]: u for u in listed.json()["items"]}
    assert {"admin", "operator", "viewer", "ops1", "ops2", "boss2"} <= set(names)
    assert "password_hash" not in listed.text and names["ops1"]["disabled"] is False

    # only admins administer users
    operator = login(url, "operator")
    assert httpx.get(f"{url}/users", headers=operator, timeout=30).status_code == 403
    patch = httpx.patch(f"{url}/users/ops1", json={"disabled": True}, headers=operator, timeout=30)
    assert patch.status_code == 403
    assert httpx.delete(f"{url}/users/ops1", headers=operator, timeout=30).status_code == 403

    # disable: the existing token is refused, the password too; enabling needs a new login
    patch = httpx.patch(f"{url}/users/ops1", json={"disabled": True}, headers=admin, timeout=30)
    assert patch.status_code == 200 and patch.json()["disabled"] is True, patch.text
    refused = httpx.get(f"{url}/predictions", headers=ops1, timeout=30)
    assert refused.status_code == 401 and "disabled" in refused.json()["reason"]
    no_login = httpx.post(
        f"{url}/token", data={"username": "ops1", "password": "ops1-long-password"}, timeout=30
    )
    assert no_login.status_code == 401
    patch = httpx.patch(f"{url}/users/ops1", json={"disabled": False}, headers=admin, timeout=30)
    assert patch.status_code == 200
    assert _reads(url, ops1) == 401  # a token of before the change stays refused
    assert _reads(url, _token(url, "ops1", "ops1-long-password")) == 200

    # demote an admin: its admin token no longer passes admin routes (nor any other)
    assert httpx.get(f"{url}/users", headers=boss2, timeout=30).status_code == 200
    patch = httpx.patch(f"{url}/users/boss2", json={"role": "viewer"}, headers=admin, timeout=30)
    assert patch.status_code == 200 and patch.json()["role"] == "viewer"
    assert httpx.get(f"{url}/users", headers=boss2, timeout=30).status_code == 401
    demoted = httpx.patch(f"{url}/users/ops2", json={"role": "admin"}, headers=boss2, timeout=30)
    assert demoted.status_code == 401
    viewer_now = _token(url, "boss2", "boss2-long-password")
    assert httpx.get(f"{url}/users", headers=viewer_now, timeout=30).status_code == 403
    assert _reads(url, viewer_now) == 200

    # delete: the token is refused
    deleted = httpx.delete(f"{url}/users/ops2", headers=admin, timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"username": "ops2", "deleted": True}
    assert _reads(url, ops2) == 401
    assert httpx.delete(f"{url}/users/ops2", headers=admin, timeout=30).status_code == 404
    unknown = httpx.patch(f"{url}/users/nobody", json={"disabled": True}, headers=admin, timeout=30)
    assert unknown.status_code == 404
    empty = httpx.patch(f"{url}/users/ops1", json={}, headers=admin, timeout=30)
    assert empty.status_code == 422
    # every change is logged with the admin who made it
    log = server.log.read_text()
    assert "user 'ops1' changed by 'admin': disabled=True" in log
    assert "user 'boss2' changed by 'admin': role=viewer" in log
    assert "user 'ops2' changed by 'admin': deleted" in log
    audit = list(
        client[settings.mongodb_db]["audit"].find({"target": {"$in": ["ops1", "boss2", "ops2"]}})
    )
    seen = {(a["action"], a["target"], a["user"], a["via"]) for a in audit}
    assert ("user_update", "boss2", "admin", "api") in seen
    assert ("user_delete", "ops2", "admin", "api") in seen
    assert {"disabled": True} in [a["change"] for a in audit if a["target"] == "ops1"]


def test_the_last_enabled_admin_cannot_be_removed(
    api: tuple[Server, Settings, MongoClient],
) -> None:
    server, _, _ = api
    admin = login(server.url, "admin")
    for change in ({"disabled": True}, {"role": "operator"}):
        answer = httpx.patch(f"{server.url}/users/admin", json=change, headers=admin, timeout=30)
        assert answer.status_code == 409, answer.text
        assert "no enabled admin" in answer.json()["reason"]
    answer = httpx.delete(f"{server.url}/users/admin", headers=admin, timeout=30)
    assert answer.status_code == 409
    # nothing changed: the admin and its token still work
    assert httpx.get(f"{server.url}/users", headers=admin, timeout=30).status_code == 200


@pytest.fixture
def cli_env(
    api: tuple[Server, Settings, MongoClient], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    _, settings, _ = api
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["users", *args])
    return result.exit_code, result.output


def _refused_within(url: str, headers: dict[str, str], seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if _reads(url, headers) == 401:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"the token still worked {seconds} s after the change")


def test_cli_list_disable_enable_set_role_delete(
    api: tuple[Server, Settings, MongoClient], cli_env: None
) -> None:
    """Changes made from the CLI (another process, no cache to drop) reach the running API
    within its user cache time; the last admin is protected there too."""
    server, settings, client = api
    url = server.url
    viewer = login(url, "viewer")
    operator = login(url, "operator")
    code, out = _cli("list")
    assert code == 0 and "operator" in out and "viewer" in out, out

    assert _reads(url, viewer) == 200  # cached by the API now
    code, out = _cli("disable", "viewer")
    assert code == 0, out
    assert _refused_within(url, viewer, 60) <= CACHE_S + 3
    code, out = _cli("enable", "viewer")
    assert code == 0
    assert _reads(url, _token(url, "viewer", PASSWORDS["viewer"])) == 200

    code, out = _cli("set-role", "operator", "viewer")
    assert code == 0, out
    _refused_within(url, operator, 60)
    code, out = _cli("set-role", "operator", "root")
    assert code == 1 and "role" in out

    code, out = _cli("delete", "viewer", "--yes")
    assert code == 0, out
    code, out = _cli("delete", "viewer", "--yes")
    assert code == 1 and "no user" in out

    for args in (
        ("disable", "admin"),
        ("set-role", "admin", "viewer"),
        ("delete", "admin", "--yes"),
    ):
        code, out = _cli(*args)
        assert code == 1 and "no enabled admin" in out, out
    assert httpx.get(f"{url}/users", headers=login(url, "admin"), timeout=30).status_code == 200
    names = {u["username"]: u for u in httpx.get(
        f"{url}/users", headers=login(url, "admin"), timeout=30
    ).json()["items"]}  # fmt: skip
    assert "viewer" not in names and names["operator"]["role"] == "viewer"
    audit = client[settings.mongodb_db]["audit"].find_one({"action": "user_delete"})
    assert (
        audit["target"] == "viewer" and audit["via"] == "cli" and audit["user"].startswith("cli:")
    )
