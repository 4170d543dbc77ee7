"""`machine-health serve --forwarded-allow-ips`, as the chart runs it: the login throttle keys on
the X-Forwarded-For client only when the direct peer is a trusted proxy (real uvicorn, real store).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from machine_health.config import Settings
from tests.support.paths import REPO
from tests.support.servers import Server, free_port, wait_ready
from tests.support.settings import make_settings
from tests.support.users import PASSWORDS, create_users


def _serve(settings: Settings, log_dir: Path, forwarded_allow_ips: str) -> Server:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "machine_health", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--forwarded-allow-ips", forwarded_allow_ips],
            env={**env, **settings.as_env()}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    return wait_ready(Server(f"http://127.0.0.1:{port}", proc, log), "/health", 120)


@pytest.fixture
def proxied(tmp_path: Path, store_uri: str) -> Iterator[tuple[Settings, MongoClient]]:
    # 2 failures per user name, 2 x 5 = 10 per client address
    settings = make_settings(tmp_path, store_uri, login_max_failures=2)
    create_users(settings)
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    yield settings, client
    client.drop_database(settings.mongodb_db)
    client.close()


def _login(url: str, name: str, password: str, forwarded_for: str) -> int:
    return httpx.post(
        f"{url}/token", data={"username": name, "password": password},
        headers={"X-Forwarded-For": forwarded_for}, timeout=30,
    ).status_code  # fmt: skip


def _spray(url: str, forwarded_for: str, attempts: int = 12) -> list[int]:
    """Wrong passwords for many user names from one client: its per-client limit is reached."""
    return [
        _login(url, f"guess-{secrets.token_hex(3)}", "wrong-password", forwarded_for)
        for _ in range(attempts)
    ]


def test_a_trusted_proxy_s_clients_are_throttled_one_by_one(
    proxied: tuple[Settings, MongoClient], tmp_path: Path
) -> None:
    """Behind a trusted proxy (this test's loopback peer is in the range), one client's password
    spraying locks that client out, not everyone behind the same proxy."""
    settings, client = proxied
    server = _serve(settings, tmp_path / "logs", "127.0.0.0/8,10.42.0.0/16")
    try:
        codes = _spray(server.url, "203.0.113.7")
        assert codes[-1] == 429 and set(codes) <= {401, 429}, codes
        # another client behind the same proxy still logs in
        assert _login(server.url, "operator", PASSWORDS["operator"], "198.51.100.20") == 200
        # the attacker is still locked out, with the right password too
        assert _login(server.url, "viewer", PASSWORDS["viewer"], "203.0.113.7") == 429
        # an X-Forwarded-For chain: the address the trusted proxy appended is the client
        assert _login(server.url, "admin", PASSWORDS["admin"], "1.2.3.4, 198.51.100.21") == 200
    finally:
        server.stop()
    keys = set(client[settings.mongodb_db]["login_failures"].distinct("key"))
    assert "client:203.0.113.7" in keys and "client:127.0.0.1" not in keys


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    proxied: tuple[Settings, MongoClient], tmp_path: Path
) -> None:
    """A peer outside the range cannot choose its throttle key by sending X-Forwarded-For."""
    settings, client = proxied
    server = _serve(settings, tmp_path / "logs", "10.42.0.0/16")
    try:
        codes = [
            _login(server.url, f"guess-{i}", "wrong-password", f"203.0.113.{i}") for i in range(12)
        ]
        assert codes[-1] == 429, codes  # a new forged address each time did not help
    finally:
        server.stop()
    keys = set(client[settings.mongodb_db]["login_failures"].distinct("key"))
    assert "client:127.0.0.1" in keys
    assert not any(k.startswith("client:203.0.113.") for k in keys), keys
